"""Shadow evaluation: a candidate policy decided beside the active one on every record, counted only.

The hot loop (`BatchProcessor.process`) decides both policies in one call (`rules.PairDecider`: one
country look-up, one birthday look-up, at most one opt-out look-up for the two) and tallies
(source, active reason, shadow reason) per batch; `Shadow.add` then adds the batch's tally to the
Prometheus counter once. Nothing else is kept: three labels from fixed sets, no user id, no date, no
text. The shadow never produces, dead-letters or changes the active decision.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping

from rules import Decider, PairDecider, Reason, Source

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


class ShadowPass:
    """The batch processor's side of a shadow policy: one `PairDecider` (kept, memos and all, while the
    two policies stay the same), the records of the batch whose two decisions differ, and at the end the
    batch's (source, active, shadow) counts. Only the differences are listed: the rest (usually most)
    got the same decision from both, which the batch's own tally already counts."""

    def __init__(self) -> None:
        self.pair: PairDecider | None = None
        self.differ: list[Pair] = []
        self._before: dict[tuple[Source, str], int] = {}

    def decider(self, active: Decider, shadow: Shadow) -> PairDecider:
        pair = self.pair
        if pair is None or pair.shadow is not shadow.decider or pair.active is not active:
            pair = self.pair = PairDecider(active, shadow.decider)
        return pair

    def begin(self, tally: Mapping[tuple[Source, str], int]) -> list[Pair]:
        self.differ.clear()  # what a batch that raised had tallied is dropped with its decisions
        self._before = dict(tally)
        return self.differ

    def end(self, shadow: Shadow, tally: Mapping[tuple[Source, str], int]) -> None:
        """Every record the batch counted in `tally` was decided by the shadow too (a dead letter is
        malformed under both); those in `differ` got another decision from it, the rest the same one."""
        pairs: dict[Pair, int] = dict(Counter(self.differ))
        self.differ.clear()
        differing: dict[tuple[Source, Reason], int] = {}
        for (source, changed, _), count in pairs.items():
            differing[source, changed] = differing.get((source, changed), 0) + count
        for (source, decided), count in tally.items():
            reason = Reason(decided)
            same = count - self._before.get((source, decided), 0) - differing.get((source, reason), 0)
            if same:
                pairs[source, reason, reason] = same
        shadow.add(pairs)
