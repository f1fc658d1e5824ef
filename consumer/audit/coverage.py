"""Which input offsets the receipts cover, and where they overlap: pure functions of offset ranges.

Per input partition the union of the receipts' ranges must cover every offset of the window that holds
a record (offsets with none, transaction markers and compacted ones, need nothing). Two receipts whose
ranges overlap decided the same records twice: under at-least-once that is a repeat (a crash between a
receipt and its commit decides the range again), allowed when each re-decides to what it says; under
exactly-once a range is decided once, and any overlap is a conflict.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable

Interval = tuple[int, int]  # first, last (both included)


def merged(ranges: Iterable[Interval]) -> list[Interval]:
    """The union of `ranges` as disjoint, sorted intervals (adjacent ones joined)."""
    out: list[Interval] = []
    for first, last in sorted(ranges):
        if out and first <= out[-1][1] + 1:
            if last > out[-1][1]:
                out[-1] = (out[-1][0], last)
        else:
            out.append((first, last))
    return out


def uncovered(offsets: Iterable[int], covered: list[Interval]) -> list[tuple[int, int, int]]:
    """The runs of `offsets` (sorted) outside `covered` (merged): (first, last, records) each, a run
    ending where a covered interval starts."""
    starts = [first for first, _ in covered]
    runs: list[tuple[int, int, int]] = []
    run: list[int] | None = None
    run_index = -2
    for offset in offsets:
        i = bisect_right(starts, offset) - 1
        if i >= 0 and covered[i][0] <= offset <= covered[i][1]:
            continue
        if run is not None and run_index == i:
            run[1], run[2] = offset, run[2] + 1
        else:
            if run is not None:
                runs.append((run[0], run[1], run[2]))
            run, run_index = [offset, offset, 1], i
    if run is not None:
        runs.append((run[0], run[1], run[2]))
    return runs


def overlaps(ranges: list[tuple[Interval, int]]) -> list[tuple[int, int, Interval]]:
    """Pairs of ranges (each with an identifier) that share an offset: (identifier, earlier identifier,
    the shared interval), each range against every earlier-starting one it meets."""
    out: list[tuple[int, int, Interval]] = []
    active: list[tuple[Interval, int]] = []
    for (first, last), ident in sorted(ranges):
        active = [(r, i) for r, i in active if r[1] >= first]
        for (f0, l0), i0 in active:
            out.append((ident, i0, (max(first, f0), min(last, l0))))
        active.append(((first, last), ident))
    return out
