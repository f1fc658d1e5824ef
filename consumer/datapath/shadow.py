"""Shadow evaluation: a candidate policy decided beside the active one on every record, counted only.

The hot loop (`BatchProcessor.process`) decides both policies in one call (`rules.PairDecider`: one
country look-up, one birthday look-up, at most one opt-out look-up for the two) and tallies
(source, active reason, shadow reason) per batch; `Shadow.add` then adds the batch's tally to the
Prometheus counter once. Nothing else is kept: three labels from fixed sets, no user id, no date, no
text. The shadow never produces, dead-letters or changes the active decision.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from rules import Decider, Reason, Source

Pair = tuple[Source, Reason, Reason]  # (source, active reason, shadow reason)


class Shadow:
    """The shadow decider, and where its counts go: `sink(pairs)` once per batch (the metric)."""

    __slots__ = ("decider", "sink", "totals")

    def __init__(self, decider: Decider, sink: Callable[[Mapping[Pair, int]], None] | None = None) -> None:
        self.decider = decider
        self.sink = sink
        self.totals: dict[Pair, int] = {}  # since start: what the metric holds, for tests and the summary

    @property
    def version(self) -> str:
        return self.decider.policy.version

    def add(self, pairs: Mapping[Pair, int]) -> None:
        totals = self.totals
        for key, count in pairs.items():
            totals[key] = totals.get(key, 0) + count
        if self.sink is not None:
            self.sink(pairs)


def would_add(pairs: Mapping[Pair, int] | Mapping[tuple[Reason, Reason], int]) -> int:
    """Records the shadow would admit that the active policy does not."""
    return sum(n for key, n in pairs.items() if key[-2] != Reason.ELIGIBLE and key[-1] == Reason.ELIGIBLE)


def would_remove(pairs: Mapping[Pair, int] | Mapping[tuple[Reason, Reason], int]) -> int:
    """Records the active policy admits that the shadow would not."""
    return sum(n for key, n in pairs.items() if key[-2] == Reason.ELIGIBLE and key[-1] != Reason.ELIGIBLE)


def by_decisions(pairs: Iterable[tuple[Pair, int]]) -> dict[tuple[Reason, Reason], int]:
    """The counts summed over the sources: (active, shadow) -> records."""
    out: dict[tuple[Reason, Reason], int] = {}
    for (_, active, shadow), count in pairs:
        out[active, shadow] = out.get((active, shadow), 0) + count
    return out
