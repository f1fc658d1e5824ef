"""Shadow evaluation: a candidate policy decided beside the active one on every record, counted only.

The hot loop (`BatchProcessor.process`) asks the shadow `Decider` with the same decoded fields as the
active one and tallies (source, active reason, shadow reason) per batch; `Shadow.add` then adds the
batch's tally to the Prometheus counter once. Nothing else is kept: three labels from fixed sets, no
user id, no date, no text. The shadow never produces, dead-letters or changes the active decision.

The opt-out answer is shared: the active decider asks `opted_out` last, only after every other check
passed, so an active `eligible` means "not opted out" and an active `opted_out` means "opted out";
the shadow is handed that answer instead of asking the filter again. For any other active reason
the filter was not asked, and the shadow asks the same filter itself when its own checks pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from rules import Decider, Reason, Source

Pair = tuple[Source, Reason, Reason]  # (source, active reason, shadow reason)


# Membership in the empty set: "not opted out" for any user id, without a Python frame per call.
_not_opted_out: Callable[[Any], bool] = frozenset().__contains__


def _opted_out(_user_id: Any) -> bool:
    return True


# The active reasons that already tell the opt-out answer (see the module's docstring).
KNOWN_OPTOUT: dict[Reason, Callable[[Any], bool]] = {Reason.ELIGIBLE: _not_opted_out, Reason.OPTED_OUT: _opted_out}


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
