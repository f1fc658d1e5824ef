"""The fast path's own cost per record: decode_post, decode_ai_interaction and training_record.

A small timing script, not a test (timings on a shared machine are no pass/fail criterion). Each
round times `--calls` calls of each function on the same few typical values (short and long
strings, 1- and 2-byte length varints, a birth date, a language); the median of `--rounds` rounds is
printed, in nanoseconds a call, with the minimum and maximum.

`--baseline FILE` loads another build of the module (e.g. a .so compiled from an older
fastpath.py, renamed as in the file name) and interleaves its rounds with the installed module's,
so that both see the same load of a shared machine; the last column is the ratio of the medians.

    .venv/bin/python -m tests.benchmarks.fastpath_decode [--rounds 101] [--calls 20000] [--baseline FILE]
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from consumer.wire import fastpath
from consumer.wire.codec import AI_INTERACTION, POST, TRAINING_RECORD, Codec
from tests import samples

CODEC = Codec()
POSTS = [
    CODEC.encode(POST, samples.POST),
    CODEC.encode(POST, {**samples.POST, "text": "a longer post " * 20, "language": None}),
]
INTERACTIONS = [
    CODEC.encode(AI_INTERACTION, {**samples.AI_INTERACTION, "user_birth_date": 5000}),
    CODEC.encode(AI_INTERACTION, {**samples.AI_INTERACTION, "prompt": "why? " * 40, "response": "because " * 60}),
]


def _round(call: Callable[[bytes], object], values: list[bytes], calls: int) -> float:
    """Nanoseconds a call, over `calls` calls cycling through `values`."""
    loops = calls // len(values)
    start = time.perf_counter_ns()
    for _ in range(loops):
        for value in values:
            call(value)
    return (time.perf_counter_ns() - start) / (loops * len(values))


HEADER = CODEC.header(TRAINING_RECORD)
COUNTRY = fastpath.avro_string("DE")
PSEUDONYM = b"f" * 64
PROVENANCE = fastpath.avro_string("2026-11-24.1") + fastpath.avro_string("posts.v1") + fastpath.zigzag_varint(3)


def cases(module: ModuleType) -> dict[str, tuple[Callable[[bytes], object], list[bytes]]]:
    decode, build = module.decode_post, module.training_record

    def decode_and_build(value: bytes) -> object:
        f = decode(value)
        return build(HEADER, value, f[0], f[5], f[6], f[9], f[7], COUNTRY, PSEUDONYM, PROVENANCE, 42)

    return {
        "decode_post": (decode, POSTS),
        "decode_ai_interaction": (module.decode_ai_interaction, INTERACTIONS),
        "decode_post + training_record": (decode_and_build, POSTS),
    }


def load(path: Path) -> ModuleType:
    name = path.name.split(".")[0]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=101)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--baseline", type=Path, help="another build of fastpath to compare with")
    args = parser.parse_args()
    modules = {"installed": fastpath}
    if args.baseline:
        modules["baseline"] = load(args.baseline)
    for label, module in modules.items():
        for value in POSTS:
            assert module.decode_post(value) == fastpath.decode_post(value), f"{label} decodes differently"
    print(f"installed fast path compiled: {fastpath.COMPILED}; ns a call, median (min-max) of {args.rounds} rounds")
    times: dict[tuple[str, str], list[float]] = {}
    runs = [
        (name, label, call, values)
        for label, module in modules.items()
        for name, (call, values) in cases(module).items()
    ]
    shuffle = random.Random(0).shuffle
    for _ in range(args.rounds):  # interleaved, in a new order each round: a busy moment of the machine hits all alike
        shuffle(runs)
        for name, label, call, values in runs:
            times.setdefault((name, label), []).append(_round(call, values, args.calls))
    for name in cases(fastpath):
        line = f"  {name:<32}"
        for label in modules:
            series = times[name, label]
            line += f" {label} {statistics.median(series):7.1f} ({min(series):.1f}-{max(series):.1f})"
        if args.baseline:
            ratio = statistics.median(times[name, "installed"]) / statistics.median(times[name, "baseline"])
            line += f"  installed/baseline {ratio:.3f}"
        print(line)


if __name__ == "__main__":
    main()
