"""The consent set's memory and look-up cost at 10 and 100 million consents (`make bench`, or
`python -m tests.benchmarks.bench --consents`). Prints a table and writes JSON.

For each size: the table is built by bulk insertion of random 128-bit hashes (what HMAC pseudonyms
look like to it) in the compiled loop, plus 100,000 real hex pseudonyms through `add`; then, in
several repetitions, look-ups of members (hits) and of non-members (misses) through `contains`,
the call the hot loop makes (Python call and hex parsing included), and through the compiled bulk
loop (the probing alone); then withdrawals through `remove`. Medians with min and max.

    python -m tests.benchmarks.consents [--sizes 10000000,100000000] [--repeats 5] [--output FILE]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from array import array
from pathlib import Path
from typing import Any

import orjson

from consumer.consents import fingerprints
from consumer.consents.fingerprints import ConsentSet

DEFAULT_OUTPUT = Path(__file__).parent / "results" / "consents.json"
CHUNK = 1_000_000
PROBES = 100_000


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def random_words(n: int) -> array:
    words = array("Q")
    words.frombytes(os.urandom(8 * n))
    return words


def hex_pseudonyms(n: int) -> list[bytes]:
    return [os.urandom(32).hex().encode() for _ in range(n)]


def spread(samples: list[float]) -> dict[str, float]:
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples), "n": len(samples)}


def per_call_ns(contains: Any, keys: list[bytes]) -> float:
    started = time.perf_counter_ns()
    for key in keys:
        contains(key)
    return (time.perf_counter_ns() - started) / len(keys)


def loop_ns(keys: list[bytes]) -> float:
    """The same loop calling a no-op builtin: the Python loop's own share of `per_call_ns`."""
    noop = id
    started = time.perf_counter_ns()
    for key in keys:
        noop(key)
    return (time.perf_counter_ns() - started) / len(keys)


def measure(size: int, repeats: int) -> dict[str, Any]:
    before = rss()
    started = time.perf_counter()
    consents = ConsentSet(size)
    allocate_seconds = time.perf_counter() - started
    members_first = members_second = array("Q")
    started = time.perf_counter()
    bulk = size - PROBES
    for done in range(0, bulk, CHUNK):
        firsts, seconds = random_words(min(CHUNK, bulk - done)), random_words(min(CHUNK, bulk - done))
        consents.bulk_insert(firsts, seconds)
        if done == 0:
            members_first, members_second = firsts[:PROBES], seconds[:PROBES]
    hits = hex_pseudonyms(PROBES)
    for p in hits:
        consents.add(p)
    build_seconds = time.perf_counter() - started
    after = rss()
    misses = hex_pseudonyms(PROBES)
    miss_first, miss_second = random_words(PROBES), random_words(PROBES)
    contains = consents.contains
    out: dict[str, list[float]] = {k: [] for k in ("hit_call", "miss_call", "loop", "hit_bulk", "miss_bulk")}
    false_matches = 0
    for _ in range(repeats):
        out["hit_call"].append(per_call_ns(contains, hits))
        out["miss_call"].append(per_call_ns(contains, misses))
        out["loop"].append(loop_ns(hits))
        t = time.perf_counter_ns()
        found = consents.bulk_contains(members_first, members_second)
        out["hit_bulk"].append((time.perf_counter_ns() - t) / PROBES)
        t = time.perf_counter_ns()
        false_matches += consents.bulk_contains(miss_first, miss_second)
        out["miss_bulk"].append((time.perf_counter_ns() - t) / PROBES)
        assert found == PROBES or consents.refused, "a member was not found"
    assert all(contains(p) for p in hits) and not any(contains(p) for p in misses)
    false_matches += sum(contains(p) for p in misses)
    t = time.perf_counter_ns()
    for p in hits:
        consents.remove(p)
    remove_ns = (time.perf_counter_ns() - t) / PROBES
    assert not any(contains(p) for p in hits)
    return {
        "consents": size,
        "entries": consents.entries + PROBES,
        "refused": consents.refused,
        "slots": consents.slots,
        "load": size / consents.slots,
        "table_bytes": consents.size_bytes,
        "bytes_per_consent": consents.size_bytes / size,
        "rss_growth_bytes": after - before,
        "fingerprint_bits": consents.slots.bit_length() - 1 + fingerprints.REMAINDER_BITS,
        "false_admission_probability": consents.false_admission_probability(size),
        "false_matches_seen": false_matches,
        "miss_lookups_made": repeats * PROBES + PROBES,
        "allocate_seconds": allocate_seconds,
        "build_seconds": build_seconds,
        "build_ns_per_consent": build_seconds * 1e9 / size,
        "lookup_ns": {
            "hit_contains": spread(out["hit_call"]),
            "miss_contains": spread(out["miss_call"]),
            "python_loop_alone": spread(out["loop"]),
            "hit_probe_only": spread(out["hit_bulk"]),
            "miss_probe_only": spread(out["miss_bulk"]),
        },
        "remove_ns": remove_ns,
    }


def table(results: list[dict[str, Any]]) -> str:
    def ns(s: dict[str, float]) -> str:
        return f"{s['median']:6.0f} ({s['min']:.0f}-{s['max']:.0f})"

    lines = [
        f"consent set (compiled: {fingerprints.COMPILED}); look-ups in ns, median (min-max) of "
        f"{results[0]['lookup_ns']['hit_contains']['n']} repetitions of {PROBES:,}",
        f"{'consents':>12} {'slots':>12} {'load':>5} {'table MiB':>10} {'B/consent':>9} {'RSS MiB':>8} "
        f"{'build s':>8} {'hit contains':>18} {'miss contains':>18} {'loop alone':>16} {'hit probe':>16} "
        f"{'miss probe':>16} {'remove':>7} {'P(false admission)':>19}",
    ]
    for r in results:
        n = r["lookup_ns"]
        lines.append(
            f"{r['consents']:>12,} {r['slots']:>12,} {r['load']:>5.2f} {r['table_bytes'] / 2**20:>10.0f} "
            f"{r['bytes_per_consent']:>9.2f} {r['rss_growth_bytes'] / 2**20:>8.0f} {r['build_seconds']:>8.1f} "
            f"{ns(n['hit_contains']):>18} {ns(n['miss_contains']):>18} {ns(n['python_loop_alone']):>16} "
            f"{ns(n['hit_probe_only']):>16} {ns(n['miss_probe_only']):>16} {r['remove_ns']:>7.0f} "
            f"{r['false_admission_probability']:>19.2e}"
        )
    lines.append(
        "P(false admission): bound on one look-up of a user who never consented matching, n / 2^(k+48) at "
        "capacity; false matches seen: "
        + ", ".join(f"{r['false_matches_seen']} in {r['miss_lookups_made']:,}" for r in results)
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000000,100000000", help="comma-separated consent counts")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    if not fingerprints.COMPILED:
        print(
            "the consent set is not compiled (make install builds it); figures would be the fallback's", file=sys.stderr
        )
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        print(f"[consents] building {size:,} ...", flush=True)
        results.append(measure(size, args.repeats))
    print(table(results))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(
        orjson.dumps({"compiled": fingerprints.COMPILED, "results": results}, option=orjson.OPT_INDENT_2)
    )
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
