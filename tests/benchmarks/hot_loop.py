"""The hot loop's own cost per record: `BatchProcessor.process` over a generated stream, no broker.

A measuring script, not a test. The producer is a stub that acknowledges at once, so what is timed is
decoding, deciding, building and the producer call, per input record (malformed records excluded).

- Time (default): the median of `--repeat` passes in µs a record, with the minimum and maximum.
- `--instructions`: instructions a record under valgrind's callgrind, the difference of a run with
  two passes and one with one pass (start-up cancels out). Deterministic and much less dependent on
  the machine than time: the figure to compare two versions by.
- `--against DIR`: the same measurement of another checkout of this repository (e.g. a `git worktree`
  of an older commit), interleaved with this one, and the ratio.
- `--receipts`: this checkout with and without decision receipts (issue 23: at most 3 % more per
  record): the batches kept as receipts need them, and their receipts written, signed, to a stub.
- `--changes`: this checkout with and without a change set (issue 22: the goal is under 5 % more per
  record), interleaved, and the ratio. The set holds `--stopped` record ids and `--corrected` accounts
  that the stream does not contain, as in production, where almost every record passes the check.

    .venv/bin/python -m tests.benchmarks.hot_loop [--records 100000] [--repeat 7] [--instructions]
        [--against DIR | --changes [--stopped 1000000] [--corrected 100000] | --receipts]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


class _Msg:
    __slots__ = ("_k", "_o", "_p", "_t", "_v")

    def __init__(self, topic: str, partition: int, offset: int, value: bytes, key: bytes) -> None:
        self._t, self._p, self._o, self._v, self._k = topic, partition, offset, value, key

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def value(self) -> bytes:
        return self._v

    def key(self) -> bytes:
        return self._k

    def headers(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (1, 0)


class _Producer:
    """Acknowledges at once, with a delivery report that says where (as librdkafka's does)."""

    def __init__(self) -> None:
        self.report = _Msg("training", 0, -1, b"", b"")

    def produce(self, topic: str, value: Any = None, key: Any = None, partition: int = -1, on_delivery: Any = None):
        report = self.report
        report._o += 1
        on_delivery(None, report)

    def poll(self, timeout: float = 0) -> int:
        return 0


def write_stream(path: Path, records: int) -> None:
    """The stream every checkout measures: generated once, here, so that all decide the same records."""
    from consumer.devtools.generator import StreamGenerator

    gen = StreamGenerator(seed=3, users_per_pool=2000)
    stream = [(g.topic, g.value, g.key) for g in gen.stream(records) if g.expected != "malformed"]
    path.write_bytes(pickle.dumps({"stream": stream, "optouts": [key for key, _ in gen.optouts()]}))


def change_guard(stopped: int, corrected: int) -> Any:
    """A change set of `stopped` record ids and `corrected` accounts none of the stream's records has."""
    from consumer.changes.changeset import ChangeSet
    from consumer.changes.guard import ChangeGuard
    from rules import AccountFacts

    changes = ChangeSet(max(stopped, 1), 1e-6, max(corrected, 1))
    for i in range(stopped):
        changes.stop(f"gone-{i:012d}")
    facts = AccountFacts(deleted=False, birth_day=0, country="DE")
    for i in range(corrected):
        changes.correct(f"{i:064x}".encode(), facts)
    return ChangeGuard(changes)


def receipt_writer() -> Any:
    """A receipt writer that signs and encodes every receipt into a producer that keeps nothing."""
    from consumer.audit.writer import ChainHeads, ReceiptWriter
    from consumer.operations.settings import load_settings
    from consumer.wire.codec import Codec

    class Sink:
        def produce(self, *args: Any, **kwargs: Any) -> None:
            pass

    s = load_settings({"TF_BOOTSTRAP_SERVERS": "x:1", "TF_HMAC_KEY": "k" * 32, "TF_AUDIT_KEY": "a" * 32})
    heads = ChainHeads(None, s.audit_topic, 6, None)
    heads.heads = {(t, p): None for t in ("posts.v1", "ai-interactions.v1") for p in range(6)}
    return ReceiptWriter(Sink(), Codec(), s, heads, replica="bench")


def passes(path: Path, repeat: int, changes: tuple[int, int] | None = None, receipts: bool = False) -> list[float]:
    """µs a record of each of `repeat` passes over the stream in `path` (run in this checkout's code);
    `changes`: (stopped, corrected) for a change set, None for none; `receipts`: batches kept for
    receipts, and theirs written."""
    from consumer.datapath.batch import BatchProcessor
    from consumer.datapath.offsets import PendingBatch
    from consumer.datapath.pseudonym import Pseudonymiser
    from consumer.optouts.filter import OptOutFilter
    from consumer.wire.codec import Codec
    from rules import Decider, load_policy

    data = pickle.loads(path.read_bytes())
    msgs = sorted(
        (_Msg(topic, i % 6, i, value, key) for i, (topic, value, key) in enumerate(data["stream"])),
        key=lambda m: (m._p, m._o),
    )
    optouts = OptOutFilter(1_000_000, 1e-6)
    pseudonymiser = Pseudonymiser(b"k" * 32)
    for key in data["optouts"]:
        optouts.add(pseudonymiser.pseudonym(key))
    processor = BatchProcessor(
        decider=Decider(load_policy()),
        codec=Codec(),
        pseudonymiser=pseudonymiser,
        opted_out=lambda user: bool(optouts.contains(pseudonymiser.pseudonym(user))),
        producer=_Producer(),
        training_topic="training",
        dlq_topic="dlq",
        posts_topic="posts.v1",
        ai_interactions_topic="ai-interactions.v1",
        on_backpressure=lambda: None,
        **({"changes": change_guard(*changes)} if changes is not None else {}),
    )
    writer = receipt_writer() if receipts else None
    batch_type: Any = PendingBatch
    if receipts:
        from consumer.audit.audited_batch import AuditedBatch

        batch_type = AuditedBatch
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        for i in range(0, len(msgs), 2000):
            batch = batch_type()
            processor.process(msgs[i : i + 2000], batch, {})
            if writer is not None:
                writer.write(batch)
        out.append((time.perf_counter() - started) / len(msgs) * 1e6)
    return out


def _child(repo: Path, args: list[str], valgrind: bool = False) -> str:
    """The figures of one child process: `repo`'s code over the stream (see `--child`)."""
    # This file, run with the other checkout's code first on the path (it need not have this script).
    command = [sys.executable, str(Path(__file__).resolve()), "--child", *args]
    if valgrind:
        command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *command]
    env = {**os.environ, "PYTHONPATH": str(repo), "PYTHONSAFEPATH": "1"}
    done = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=3600, check=True)
    return done.stdout + done.stderr


def instructions(repo: Path, stream: Path, extra: tuple[str, ...] = ()) -> float:
    """Instructions a record: (a run of two passes) minus (a run of one), divided by the records."""
    counts = []
    for repeat in (2, 1):
        out = _child(repo, ["--stream", str(stream), "--repeat", str(repeat), *extra], valgrind=True)
        counts.append(int(re.search(r"Collected : (\d+)", out).group(1)))  # type: ignore[union-attr]
        done = int(re.search(r"records=(\d+)", out).group(1))  # type: ignore[union-attr]
    return (counts[0] - counts[1]) / done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--instructions", action="store_true", help="count instructions under callgrind")
    parser.add_argument("--against", type=Path, help="another checkout to measure in the same run")
    parser.add_argument("--changes", action="store_true", help="with and without a change set, and the ratio")
    parser.add_argument("--receipts", action="store_true", help="with and without decision receipts, and the ratio")
    parser.add_argument("--stopped", type=int, default=1_000_000, help="record ids in the change set")
    parser.add_argument("--corrected", type=int, default=100_000, help="corrected accounts in the change set")
    parser.add_argument("--output", type=Path, help="also write the figures and the machine as JSON here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--stream", type=Path, help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.child:
        runs = passes(a.stream, a.repeat, (a.stopped, a.corrected) if a.changes else None, a.receipts)
        count = len(pickle.loads(a.stream.read_bytes())["stream"])
        print(f"records={count} " + " ".join(f"{r:.4f}" for r in runs))
        return
    # Each variant: a label, the checkout, and the child's extra arguments.
    variants = [("this", ROOT, ())]
    if a.against:
        variants.append(("against", a.against.resolve(), ()))
    if a.changes:
        variants = [("without", ROOT, ()), ("with", ROOT, ("--changes", "--stopped", str(a.stopped)))]
        variants[1] = (variants[1][0], ROOT, (*variants[1][2], "--corrected", str(a.corrected)))
    if a.receipts:
        variants = [("without", ROOT, ()), ("with", ROOT, ("--receipts",))]
    with tempfile.TemporaryDirectory() as folder:
        stream = Path(folder) / "stream.pickle"
        write_stream(stream, min(a.records, 20_000) if a.instructions else a.records)
        per = measure(variants, stream, a.instructions, a.repeat)
    ratio = None
    if a.against:
        ratio = per["this"] / per["against"]
        print(f"ratio (this / against): {ratio:.3f}")
    if a.changes or a.receipts:
        ratio = per["with"] / per["without"]
        print(f"ratio (with {'receipts' if a.receipts else 'a change set'} / without): {ratio:.3f}")
    if a.output:
        from tests.benchmarks.harness import machine

        unit = "instructions a record" if a.instructions else "median µs a record"
        figures = {"unit": unit, "per_record": per, "ratio": ratio, "machine": machine(), "settings": vars(a)}
        figures["settings"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()}
        a.output.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")


def measure(
    variants: list[tuple[str, Path, tuple[str, ...]]], stream: Path, count_instructions: bool, repeat: int
) -> dict[str, float]:
    """Each variant's figure (printed): instructions a record, or the median µs a record."""
    if count_instructions:
        per = {label: instructions(repo, stream, extra) for label, repo, extra in variants}
        for (label, repo, _), value in zip(variants, per.values(), strict=True):
            print(f"{label} ({repo}): {value:,.0f} instructions a record")
        return per
    times: dict[str, list[float]] = {label: [] for label, _, _ in variants}
    for _ in range(repeat):  # interleaved: every variant sees the same load
        for label, repo, extra in variants:
            out = _child(repo, ["--stream", str(stream), "--repeat", "1", *extra])
            times[label].append(float(out.split()[-1]))
    for (label, repo, _), runs in zip(variants, times.values(), strict=True):
        print(
            f"{label} ({repo}): median {statistics.median(runs):.3f} µs a record "
            f"(min {min(runs):.3f}, max {max(runs):.3f}, {len(runs)} runs)"
        )
    return {label: statistics.median(runs) for label, runs in times.items()}


if __name__ == "__main__":
    main()
