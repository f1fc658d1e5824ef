"""The Bloom filter libraries considered, measured the same way: filters sized for 10 million
opt-outs at 1e-6, 200,000 string keys added, then 200,000 other keys looked up (all misses, the
common case in the hot loop). Also whether the hash is stable across processes (a snapshot needs
that) and the size of the bit array.

    python -m tests.benchmarks.bloom_candidates
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import orjson

CAPACITY, RATE, N = 10_000_000, 1e-6, 200_000


def _time(
    add: Callable[[Any], Any], has: Callable[[Any], Any], keys: list[Any], probes: list[Any]
) -> tuple[float, float]:
    start = time.perf_counter()
    for key in keys:
        add(key)
    added = time.perf_counter() - start
    start = time.perf_counter()
    for key in probes:
        has(key)
    looked = time.perf_counter() - start
    return added / len(keys) * 1e6, looked / len(probes) * 1e6


def candidates() -> dict[str, dict[str, Any]]:
    keys = [f"user-{i:09d}" for i in range(N)]
    probes = [f"other-{i:09d}" for i in range(N)]
    bkeys, bprobes = [k.encode() for k in keys], [p.encode() for p in probes]
    out: dict[str, dict[str, Any]] = {}

    from consumer.optouts.filter import OptOutFilter

    ours = OptOutFilter(CAPACITY, RATE)
    add, look = _time(ours.add, ours.contains, bkeys, bprobes)
    out["fastbloom-rs (as used: bytes, native call)"] = {
        "add_us": add,
        "lookup_us": look,
        "stable_hash": True,
        "bytes": ours.size_bytes,
    }
    from fastbloom_rs import BloomFilter

    plain = BloomFilter(CAPACITY, RATE)
    add, look = _time(plain.add_str, plain.contains_str, keys, probes)
    out["fastbloom-rs (str, library wrapper)"] = {
        "add_us": add,
        "lookup_us": look,
        "stable_hash": True,
        "bytes": len(plain.get_bytes()),
    }
    try:
        import pybloomfilter

        with tempfile.TemporaryDirectory() as folder:
            mm = pybloomfilter.BloomFilter(CAPACITY, RATE, os.path.join(folder, "f.bloom"))
            add, look = _time(mm.add, mm.__contains__, keys, probes)
            out["pybloomfiltermmap3"] = {
                "add_us": add,
                "lookup_us": look,
                "stable_hash": True,
                "bytes": mm.num_bits // 8,
            }
    except ImportError:
        out["pybloomfiltermmap3"] = {"error": "not installed (pip install -e '.[bench]')"}
    try:
        import rbloom

        salted = rbloom.Bloom(CAPACITY, RATE)
        add, look = _time(salted.add, salted.__contains__, keys, probes)
        out["rbloom (Python's salted hash: no snapshot across processes)"] = {
            "add_us": add,
            "lookup_us": look,
            "stable_hash": False,
            "bytes": salted.size_in_bits // 8,
        }

        def stable(key: str) -> int:
            return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=16).digest(), "little", signed=True)

        keyed = rbloom.Bloom(CAPACITY, RATE, stable)
        add, look = _time(keyed.add, keyed.__contains__, keys, probes)
        out["rbloom (stable blake2b hash)"] = {
            "add_us": add,
            "lookup_us": look,
            "stable_hash": True,
            "bytes": keyed.size_in_bits // 8,
        }
    except ImportError:
        out["rbloom"] = {"error": "not installed (pip install -e '.[bench]')"}
    try:
        from pybloom_live import BloomFilter as LiveBloom

        live = LiveBloom(CAPACITY, RATE)
        add, look = _time(live.add, live.__contains__, keys, probes)
        out["pybloom-live"] = {"add_us": add, "lookup_us": look, "stable_hash": True, "bytes": live.num_bits // 8}
    except ImportError:
        out["pybloom-live"] = {"error": "not installed (pip install -e '.[bench]')"}
    return out


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = [f"{'library':<62}{'add µs':>8}{'lookup µs':>11}{'stable':>8}{'MiB':>7}"]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"{name:<62}{r['error']}")
            continue
        lines.append(
            f"{name:<62}{r['add_us']:>8.2f}{r['lookup_us']:>11.3f}{'yes' if r['stable_hash'] else 'no':>8}"
            f"{r['bytes'] / 2**20:>7.1f}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    results = candidates()
    print(table(results))
    if len(sys.argv) > 1:
        with open(sys.argv[1], "wb") as handle:
            handle.write(orjson.dumps(results, option=orjson.OPT_INDENT_2))
