"""The tables of docs/performance.md, from the benchmark's JSON output (tests/benchmarks/results/):
`latest.json` (`make bench`: the pipelines, the targets, the stages, the opt-out filter),
`bloom-candidates.json`, `consents.json`, `shadow.json` and `opt-in.json`. A figure in those tables is
never typed: re-run the benchmark, then `make docs`."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from consumer.devtools.docs.markdown import table
from rules import REASONS, Reason

RESULTS = Path("tests") / "benchmarks" / "results"
MIB = 1 << 20


def load(root: Path, name: str) -> Any:
    return json.loads((root / RESULTS / name).read_text())


def _range(x: dict[str, Any], key: str, fmt: str) -> str:
    low, high = x.get("spread", {}).get(key, (x[key], x[key]))
    return f"{format(low, fmt)}–{format(high, fmt)}"


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


PIPELINES = (
    ("passthrough (ceiling)", "passthrough"),
    ("**training-filter**", "training_filter"),
    ("naive: the policy without this project", "naive"),
    ("peer: Quix Streams", "peer"),
    ("training-filter, exactly-once (1 run)", "training_filter_exactly_once"),
    ("training-filter, 2 processes (1 run)", "training_filter_two_processes"),
)


def machine(r: dict[str, Any]) -> str:
    m = r["machine"]
    fast = "the fast path compiled" if m["fast_path"] == "compiled" else f"the fast path {m['fast_path']}"
    return (
        f"Figures of one `make bench` run on **{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, "
        f"Python {m['python']}, {fast}, {m['date']}** (`tests/benchmarks/results/latest.json`)."
    )


def bench_input(r: dict[str, Any]) -> str:
    i, settings = r["input"], r["settings"]
    share = {k: v / i["records"] for k, v in i["decisions"].items()}
    order = [str(reason) for reason in REASONS if str(reason) in share and reason != Reason.MALFORMED]
    others = ", ".join(f"{share[k]:.0%} {k.replace('_', ' ')}" for k in [*order, "malformed"] if k != "eligible")
    return (
        f"- **Input**: {i['records']:,} posts, mean value {i['mean_value_bytes']:.0f} bytes (text 200 to 1,000 "
        f"bytes, with non-ASCII words and emoji), {share['eligible']:.0%} eligible and every other decision "
        f"represented ({others}); {settings['optouts']:,} opt-outs in the filter, loaded from a snapshot."
    )


def pipelines(r: dict[str, Any]) -> str:
    rows = []
    for label, key in PIPELINES:
        x = r[key]
        lat = r.get("latency", {}).get(key)
        rows.append(
            [
                label,
                f"{x['records_per_second']:,.0f} ({_range(x, 'records_per_second', ',.0f')})",
                f"{x['cpu_us_per_record']:.2f} ({_range(x, 'cpu_us_per_record', '.2f')})",
                f"{x['peak_rss_mib']:.0f}",
                f"{lat['p50_ms']:.0f}" if lat else "–",
                f"{lat['p99_ms']:.0f} ({_range(lat, 'p99_ms', '.0f')})" if lat else "–",
                f"{lat['max_ms']:.0f}" if lat else "–",
            ]
        )
    headers = ["pipeline", "records/s (spread)", "CPU µs/record (spread)", "peak RSS MiB", "p50 ms"]
    return table([*headers, "p99 ms (spread)", "max ms"], rows, right=range(1, 7))


def targets(r: dict[str, Any]) -> str:
    q, o, s, sc, lat = r["ratios"], r["optouts"], r["stages_us_per_record"], r["scaling"], r["latency"]
    prop = lat["training_filter"].get("optout_propagation", {})
    rss = r["training_filter"]["peak_rss_mib"]
    cpu, tf_p99, peer_p99 = (
        q["cpu_training_filter_over_passthrough"],
        lat["training_filter"]["p99_ms"],
        lat["peer"]["p99_ms"],
    )
    rows = [
        ["CPU per record ≤ 1.4× passthrough", f"{cpu:.2f}×", _yes(cpu <= 1.4)],
        [
            "records/s ≥ 0.9× passthrough",
            f"{q['training_filter_over_passthrough']:.2f}×",
            _yes(q["training_filter_over_passthrough"] >= 0.9),
        ],
        ["records/s ≥ 5× peer", f"{q['training_filter_over_peer']:.2f}×", _yes(q["training_filter_over_peer"] >= 5)],
        [
            "CPU per record ≤ 1/5 of peer's",
            f"peer uses {q['cpu_peer_over_training_filter']:.2f}×",
            _yes(q["cpu_peer_over_training_filter"] >= 5),
        ],
        ["p99 at half load ≤ peer's", f"{tf_p99:.0f} ms vs {peer_p99:.0f} ms", _yes(tf_p99 <= peer_p99)],
        [
            "(against the naive baseline)",
            f"{q['training_filter_over_naive']:.2f}× the records/s, {q['cpu_naive_over_training_filter']:.2f}× less "
            "CPU per record",
            "–",
        ],
        [
            "opt-out propagation p99 (timestamp to applied, half load)",
            f"{prop.get('p99_ms', float('nan')):.0f} ms (p50 {prop.get('p50_ms', float('nan')):.0f} ms, "
            f"{prop.get('optouts_applied', 0):.0f} opt-outs)",
            "–",
        ],
        ["Bloom check < 0.5 µs", f"{s['bloom_lookup']:.3f} µs", _yes(s["bloom_lookup"] < 0.5)],
        [
            "peak RSS < 300 MiB + filter",
            f"{rss:.0f} MiB (filter {o['filter_mib']:.1f})",
            _yes(rss - o["filter_mib"] < 300),
        ],
        ["10 M opt-outs at 1e-6 < 50 MiB of filter", f"{o['filter_mib']:.1f} MiB", _yes(o["filter_mib"] < 50)],
        [
            "snapshot load of 10 M < 2 s",
            f"{o['snapshot_load_seconds']:.2f} s",
            _yes(o["snapshot_load_seconds"] < 2),
        ],
        ["(exactly-once / at-least-once)", f"{q['exactly_once_over_at_least_once']:.2f}", "–"],
        ["(two processes / one, sharing the broker's core)", f"{q['two_processes_over_one']:.2f}×", "–"],
        [
            "(with a core each, predicted)",
            f"one process {sc['one_process_on_its_own_core']:,.0f} records/s, two "
            f"{sc['two_processes_on_their_own_cores']:,.0f}; the broker needs {sc['broker_cpu_us_per_record']:.2f} "
            f"CPU µs per record ({sc['broker_cores_for_two_processes']:.1f} cores for two)",
            "–",
        ],
    ]
    return table(["target", "measured", "met"], rows, right=[1])


STAGES = (
    ("decode_fast_path", "decode (fast path)"),
    ("decode_fastavro_reference", "decode (fastavro, for comparison)"),
    ("rules", "rules"),
    ("bloom_lookup", "Bloom look-up"),
    ("encode_and_pseudonymise", "pseudonymise and encode (eligible half)"),
    ("produce", "produce() call (eligible half)"),
)


def stages(r: dict[str, Any]) -> str:
    s = r["stages_us_per_record"]
    return table(["hot-loop stage", "µs per input record"], [[label, f"{s[k]:.3f}"] for k, label in STAGES], [1])


def optout_filter(r: dict[str, Any]) -> str:
    o = r["optouts"]
    return (
        f"**Opt-out filter** (same run): {o['entries'] / 1e6:,.0f} million opt-outs at 1e-6 take "
        f"{o['filter_mib']:.1f} MiB (estimated false-positive rate {_exp(o['estimated_false_positive_rate'])} at "
        f"{o['entries'] / 1e6:,.0f} million entries). Building it from scratch adds "
        f"{round(o['build_per_second'], -3):,.0f} opt-outs a second ({o['build_seconds']:.1f} s for "
        f"{o['entries'] / 1e6:,.0f} million). A snapshot is written in {o['snapshot_save_seconds']:.2f} s and "
        f"loaded (read, BLAKE2b check, rebuild) in {o['snapshot_load_seconds']:.2f} s."
    )


def _exp(x: float) -> str:
    mantissa, exponent = f"{x:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def bloom_candidates(d: dict[str, Any]) -> str:
    rows = [
        [name, f"{x['add_us']:.2f}", f"{x['lookup_us']:.3f}", _yes(x["stable_hash"]), f"{x['bytes'] / MIB:.1f}"]
        for name, x in d.items()
    ]
    return table(["library", "add µs", "look-up µs", "hash stable across processes", "MiB"], rows, [1, 2, 4])


def _binary(n: float) -> str:
    return f"{n / (1 << 30):.0f} GiB" if n >= 1 << 30 else f"{n / MIB:.0f} MiB"


def consent_capacity(d: dict[str, Any], default_capacity: int) -> str:
    """The false-admission bound at each measured capacity (the set's own figures, not a formula)."""
    rows = []
    for x in d["results"]:
        k = x["slots"].bit_length() - 1
        capacity = f"{x['consents']:,}" + (" (default)" if x["consents"] == default_capacity else "")
        mantissa, exponent = f"{x['false_admission_probability']:.1e}".split("e")
        rows.append(
            [
                capacity,
                f"{x['slots']:,} (2^{k})",
                f"{x['load']:.2f}",
                _binary(x["table_bytes"]),
                f"{x['fingerprint_bits']} bits",
                f"{mantissa} × 10^{int(exponent)}",
            ]
        )
    headers = ["`TF_CONSENT_CAPACITY`", "slots (2^k)", "load at capacity", "table", "fingerprint"]
    return table([*headers, "false admission at capacity"], rows, right=range(6))


def _ns(x: dict[str, Any]) -> str:
    return f"{x['median']:.0f} ns ({x['min']:.0f}-{x['max']:.0f})"


def consent_set(d: dict[str, Any]) -> str:
    lookups = ("hit_contains", "miss_contains", "hit_probe_only", "miss_probe_only")
    rows = [
        [
            f"{x['consents']:,}",
            f"2^{x['slots'].bit_length() - 1}",
            f"{x['load']:.2f}",
            _binary(x["table_bytes"]),
            f"{x['bytes_per_consent']:.1f}",
            f"{x['rss_growth_bytes'] / MIB:,.0f} MiB",
            f"{x['build_seconds']:.1f} s",
            *(_ns(x["lookup_ns"][k]) for k in lookups),
            f"{x['remove_ns']:.0f} ns",
        ]
        for x in d["results"]
    ]
    headers = ["consents", "slots", "load", "table", "bytes per consent", "RSS growth", "build"]
    headers += ["`contains` hit", "`contains` miss", "probe hit", "probe miss", "`remove`"]
    return table(headers, rows, right=range(12))


def consent_set_notes(d: dict[str, Any]) -> str:
    loops = " and ".join(f"{x['lookup_ns']['python_loop_alone']['median']:.0f} ns" for x in d["results"])
    seen = [x["false_matches_seen"] for x in d["results"]]
    made = {x["miss_lookups_made"] for x in d["results"]}
    count = f"{made.pop():,} look-ups of non-members at each size" if len(made) == 1 else "the look-ups of non-members"
    found = "No false match was seen" if not any(seen) else f"{' and '.join(map(str, seen))} false matches were seen"
    return (
        f"The Python loop itself accounts for {loops} of the `contains` columns (in the order of the rows). "
        f"{found} in {count}."
    )


def shadow_overhead(d: dict[str, Any]) -> str:
    runs, stub, control = d["librdkafka"], d["stub"], d["control"]

    def quartiles(xs: list[dict[str, Any]]) -> str:
        low = min(x["paired_batch_ratio_quartiles"][0] for x in xs)
        high = max(x["paired_batch_ratio_quartiles"][1] for x in xs)
        return f"{low:.3f}–{high:.3f}"

    def one(x: dict[str, Any]) -> str:
        return f"{x['paired_batch_ratio']:.3f} (one run; per pass {x['ratio_min']:.3f}–{x['ratio_max']:.3f})"

    median = statistics.median(x["paired_batch_ratio"] for x in runs)
    rows = [
        [
            "librdkafka (as in the service)",
            ", ".join(f"{x['paired_batch_ratio']:.3f}" for x in runs),
            f"**{median:.3f}**",
            quartiles(runs),
            f"{runs[0]['limit']:.2f}",
        ],
        [
            "stub (produce() free: the strictest ratio)",
            one(stub),
            f"**{stub['paired_batch_ratio']:.3f}**",
            quartiles([stub]),
            f"{stub['limit']:.2f}",
        ],
        [
            "A/A control (`--control`: the shadow off in both halves)",
            one(control),
            f"{control['paired_batch_ratio']:.3f}",
            quartiles([control]),
            "–",
        ],
    ]
    headers = ["producer", "paired ratio, per run", "median", "quartiles of the pairs", "limit"]
    return (
        f"On {d['date']}, each run {runs[0]['repetitions']} passes over {runs[0]['records']:,} records "
        f"({runs[0]['paired_batches']} paired batches); the A/A control's ratio of the pass medians is "
        f"{control['ratio_of_pass_medians']:.3f}.\n\n" + table(headers, rows, right=[2, 4])
    )


def opt_in_service(d: dict[str, Any]) -> str:
    x = d["opt_in_service"]
    a, b = x["opt_out"], x["opt_in"]

    def fig(v: dict[str, Any], key: str, fmt: str) -> str:
        low, high = v["spread"].get(key, (min(r[key] for r in v["runs"]), max(r[key] for r in v["runs"])))
        return f"{format(v[key], fmt)} ({format(low, fmt)}–{format(high, fmt)})"

    rows = [
        [label, fig(v, "cpu_us_per_record", ".2f"), fig(v, "records_per_second", ",.0f"), fig(v, "peak_rss_mib", ".0f")]
        for label, v in (("opt-out (the packaged policy)", a), ("opt-in (the component's policy)", b))
    ]
    pairs = ", ".join(
        f"{p['records_per_second'] / q['records_per_second']:.3f}" for p, q in zip(a["runs"], b["runs"], strict=True)
    )
    low, high = x["cpu_ratio_paired_min_max"]
    return (
        f"On {d['date']}, {x['repetitions']} alternating pairs of runs; {x['consent_entries']:,} consents in a set "
        f"of capacity {x['consent_capacity']:,}; every input user consented (`tests/benchmarks/results/opt-in.json`):"
        "\n\n"
        + table(["policy", "CPU µs/record (spread)", "records/s (spread)", "peak RSS MiB (spread)"], rows, [1, 2, 3])
        + f"\n\nPaired CPU ratio, opt-in over opt-out: {x['cpu_ratio_paired']:.3f} ({low:.3f}–{high:.3f}); the "
        f"wall-clock throughput of the pairs, opt-out over opt-in: {pairs}."
    )


def retractions(r: dict[str, Any], hot_loop: dict[str, Any]) -> str:
    """Issue 22's figures: change-to-retraction latency at half load and the change set's memory
    (`bench --only retractions`: results/retractions.json), and what carrying the change set costs
    the hot loop (`hot_loop --changes --instructions`: results/hot-loop-changes.json)."""
    lat = r["latency"]["training_filter"]
    got, memory, prop = lat["change_to_retraction"], lat["change_set"], lat.get("optout_propagation", {})
    m = r["machine"]
    rows = [
        [
            "change to retraction (send to the retraction's produce), half load",
            f"p50 {got['p50_ms']:.0f} ms, p99 {got['p99_ms']:.0f} ms ({_range(got, 'p99_ms', '.0f')}), "
            f"max {got['max_ms']:.0f} ms; {got['retracted']:.0f} of {got['changes_sent']:.0f} changes, median of "
            f"{got['repetitions']} runs",
            _yes(got["p99_ms"] < 1000) + " (goal: p99 under 1 s)",
        ],
        [
            "opt-out propagation in the same runs",
            f"p50 {prop.get('p50_ms', float('nan')):.0f} ms, p99 {prop.get('p99_ms', float('nan')):.0f} ms",
            "–",
        ],
        [
            "change set memory at its default capacity",
            f"{memory['change_set_bytes'] / 2**20:.1f} MiB ({memory['change_set_capacity_records']:,.0f} record ids "
            f"at 1e-6, {memory['change_set_capacity_accounts']:,.0f} accounts; their dict grows as they are used)",
            "–",
        ],
        _carrying(r.get("changes_service")),
        [
            "hot loop alone: instructions per record with a change set / without",
            f"{hot_loop['ratio']:.3f} ({hot_loop['per_record']['with']:,.0f} / "
            f"{hot_loop['per_record']['without']:,.0f} {hot_loop['unit']}; {hot_loop['settings']['stopped']:,} "
            f"record ids and {hot_loop['settings']['corrected']:,} accounts in the set)",
            "– (the decide path alone: no Kafka client in it)",
        ],
    ]
    where = (
        f"{m['cpu']}, {m['cores']} cores, {m['date']} (`tests/benchmarks/results/retractions.json`, "
        "`tests/benchmarks/results/hot-loop-changes.json`)"
    )
    return table(["figure", "measured", "goal met"], rows) + f"\n\nMeasured on {where}.\n"


def receipts(r: dict[str, Any], hot_loop: dict[str, Any]) -> str:
    """Issue 23's cost figures: the service without and with decision receipts, in alternating pairs
    (`bench --only receipts`: results/receipts.json), and the hot loop alone under callgrind
    (`hot_loop --receipts --instructions`: results/hot-loop-receipts.json)."""
    x, m = r["receipts_service"], r["machine"]
    low, high = x["cpu_ratio_paired_min_max"]
    per_million = x["receipts_written"] / max(1, x["records_decided_with_receipts"]) * 1_000_000
    rows = [
        [
            "service: CPU per record with receipts / without",
            f"{x['cpu_ratio_paired']:.3f} ({low:.3f}–{high:.3f}), {x['repetitions']} alternating pairs; "
            f"{x['without']['cpu_us_per_record']:.2f} against {x['with']['cpu_us_per_record']:.2f} CPU µs/record, "
            f"{x['without']['records_per_second']:,.0f} against {x['with']['records_per_second']:,.0f} records/s, "
            f"peak RSS {x['without']['peak_rss_mib']:.0f} against {x['with']['peak_rss_mib']:.0f} MiB (medians)",
            _yes(x["cpu_ratio_paired"] <= 1.03) + " (goal: at most 3 % more)",
        ],
        ["receipts written", f"{x['receipts_written']:,} ({per_million:,.0f} per million records decided)", "–"],
        [
            "hot loop alone: instructions per record with receipts / without",
            f"{hot_loop['ratio']:.3f} ({hot_loop['per_record']['with']:,.0f} / "
            f"{hot_loop['per_record']['without']:,.0f} {hot_loop['unit']}; batches of 2,000, their receipts "
            "signed and encoded, the delivery reports' spans)",
            "– (the decide path and the receipts alone: no Kafka client in it)",
        ],
    ]
    where = (
        f"{m['cpu']}, {m['cores']} cores, {m['date']} (`tests/benchmarks/results/receipts.json`, "
        "`tests/benchmarks/results/hot-loop-receipts.json`)"
    )
    return table(["figure", "measured", "goal met"], rows) + f"\n\nMeasured on {where}.\n"


def verify(r: dict[str, Any]) -> str:
    """Issue 23's verifier figure (`bench --only verify`: results/verify.json): `training-filter audit
    verify` as its own process over every record the real service decided with receipts."""
    x, m = r["verify"], r["machine"]
    summary, service = x["summary"], x["service"]
    per_million = x["seconds"] / x["records"] * 1_000_000
    rows = [
        [
            f"audit verify over {x['records']:,} records",
            f"{x['seconds']:.1f} s ({x['records_per_second']:,.0f} records/s; {per_million / 60:.1f} min per "
            f"million), {x['cpu_seconds']:.1f} CPU s ({x['cpu_us_per_record']:.1f} µs/record), "
            f"peak RSS {x['peak_rss_mib']:,.0f} MiB; exit status {x['exit_status']}",
            _yes(per_million <= 600 and x["exit_status"] == 0) + " (goal: a million records in minutes)",
        ],
        [
            "what it checked",
            f"{summary['receipts']:,} receipts, {summary['records']:,} input records re-decided, "
            f"{summary['training_records_read']:,} training records compared, "
            f"{summary['revocations_checked']:,} retractions looked up: "
            + ("passed" if summary["passed"] else f"{summary['discrepancy_count']:,} discrepancies"),
            "–",
        ],
        [
            "the service that decided them (audit key on)",
            f"{service['seconds']:.1f} s, {service['cpu_seconds']:.1f} CPU s",
            "–",
        ],
    ]
    where = f"{m['cpu']}, {m['cores']} cores, {m['date']} (`tests/benchmarks/results/verify.json`)"
    return table(["figure", "measured", "goal met"], rows) + f"\n\nMeasured on {where}.\n"


def _carrying(x: dict[str, Any] | None) -> list[str]:
    what = "service: CPU per record carrying a full change set / an empty one"
    if not x:
        return [what, "not measured in these results", "–"]
    low, high = x["cpu_ratio_paired_min_max"]
    return [
        what,
        f"{x['cpu_ratio_paired']:.3f} ({low:.3f}–{high:.3f}), {x['repetitions']} alternating pairs; "
        f"{x['stopped_record_ids']:,} record ids and {x['corrected_accounts']:,} accounts in the set; "
        f"{x['empty']['cpu_us_per_record']:.2f} against {x['carrying']['cpu_us_per_record']:.2f} CPU µs/record, "
        f"peak RSS {x['empty']['peak_rss_mib']:.0f} against {x['carrying']['peak_rss_mib']:.0f} MiB (medians)",
        _yes(x["cpu_ratio_paired"] < 1.05) + " (goal: under 5 % more)",
    ]
