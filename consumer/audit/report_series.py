"""The effectiveness report's series (docs/audit.md, the effectiveness report): pure functions of the
records read from the audit topic and the privacy topics, bucketed over the report's window.

Nothing here reads Kafka or a clock: `consumer/audit/report_read.py` turns the topics' records into the
small records below, and `consumer/audit/report_page.py` draws what these functions return. An empty
series is a series of zeros (or of None for a latency): the page says "no data in the window".
"""

from __future__ import annotations

import bisect
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
# Bucket sizes a window is cut into: the smallest that gives at most MAX_BUCKETS buckets (7d: hourly).
BUCKET_SIZES_MS = (MINUTE_MS, 5 * MINUTE_MS, 15 * MINUTE_MS, HOUR_MS, 6 * HOUR_MS, DAY_MS, 7 * DAY_MS)
MAX_BUCKETS = 200
_UNITS_MS = {"m": MINUTE_MS, "h": HOUR_MS, "d": DAY_MS, "w": 7 * DAY_MS}
_WINDOW = re.compile(r"([1-9][0-9]{0,4})([mhdw])", re.ASCII)
MAX_WINDOW_MS = 366 * DAY_MS


def parse_window(text: str) -> int:
    """A window such as `7d`, `24h`, `90m` or `2w`, in milliseconds; ValueError saying what is accepted."""
    match = _WINDOW.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"--window {text!r}: give a number and a unit m, h, d or w (e.g. 7d, 24h, 90m)")
    millis = int(match.group(1)) * _UNITS_MS[match.group(2)]
    if millis > MAX_WINDOW_MS:
        raise ValueError(f"--window {text!r}: at most 366 days")
    return millis


@dataclass(frozen=True)
class Window:
    """[since_ms, until_ms), cut into buckets of bucket_ms (the last one may end after until_ms)."""

    since_ms: int
    until_ms: int
    bucket_ms: int

    @classmethod
    def ending(cls, until_ms: int, length_ms: int) -> Window:
        size = next((s for s in BUCKET_SIZES_MS if length_ms / s <= MAX_BUCKETS), BUCKET_SIZES_MS[-1])
        return cls(until_ms - length_ms, until_ms, size)

    @property
    def buckets(self) -> int:
        return max(1, math.ceil((self.until_ms - self.since_ms) / self.bucket_ms))

    def index(self, at_ms: int) -> int | None:
        """The bucket of a time, None outside the window."""
        if not self.since_ms <= at_ms < self.until_ms:
            return None
        return (at_ms - self.since_ms) // self.bucket_ms

    def start(self, bucket: int) -> int:
        return self.since_ms + bucket * self.bucket_ms


# The records the series are made of (report_read.py makes them; times are epoch milliseconds).


@dataclass(frozen=True)
class Receipt:
    decided_at: int
    input_topic: str
    input_partition: int
    first_offset: int
    last_offset: int
    decisions: tuple[tuple[str, int], ...]
    dead_letters: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class Origin:
    """A record that asks for a retraction (an opt-out, a content or account change, a withdrawal): when
    the broker took it, and the revocation keys its retraction may carry (docs/retractions.md)."""

    at: int
    keys: tuple[str, ...]


@dataclass(frozen=True)
class Retraction:
    at: int  # the broker's timestamp of the revocation
    key: str
    reason: str


@dataclass(frozen=True)
class Recipient:
    group: str
    reads_revocations: bool
    unacknowledged: int
    oldest_unacknowledged_seconds: float | None


@dataclass(frozen=True)
class Snapshot:
    taken_at: int
    replica: str
    recipients: tuple[Recipient, ...]


@dataclass(frozen=True)
class Discrepancy:
    kind: str
    topic: str | None
    partition: int | None
    offset: int | None
    detail: str


@dataclass(frozen=True)
class Verification:
    started_at: int
    finished_at: int
    window_from: int | None
    window_until: int | None
    receipts: int
    records: int
    passed: bool
    discrepancies: tuple[Discrepancy, ...]
    discrepancy_count: int


Counts = dict[str, list[int]]  # name -> count per bucket


def counts_by_name(window: Window, items: Iterable[tuple[int, str, int]]) -> Counts:
    """(time, name, count) summed per name and bucket, names sorted; items outside the window left out."""
    out: dict[str, list[int]] = {}
    for at, name, count in items:
        bucket = window.index(at)
        if bucket is None or count == 0:
            continue
        out.setdefault(name, [0] * window.buckets)[bucket] += count
    return dict(sorted(out.items()))


@dataclass(frozen=True)
class ReceiptSeries:
    decisions: Counts
    dead_letters: Counts
    receipts: int  # distinct receipts in the window
    repeats: int  # receipts of a range already counted (at-least-once repeats), counted once


def receipt_series(window: Window, receipts: Sequence[Receipt]) -> ReceiptSeries:
    """Decisions by reason and dead letters by cause per bucket of decided_at. A receipt that repeats an
    input range (a batch decided again after a crash) is counted once: the first one read."""
    seen: set[tuple[str, int, int, int]] = set()
    kept: list[Receipt] = []
    for receipt in receipts:
        if window.index(receipt.decided_at) is None:
            continue
        key = (receipt.input_topic, receipt.input_partition, receipt.first_offset, receipt.last_offset)
        if key not in seen:
            seen.add(key)
            kept.append(receipt)
    in_window = sum(1 for r in receipts if window.index(r.decided_at) is not None)
    return ReceiptSeries(
        decisions=counts_by_name(window, ((r.decided_at, n, c) for r in kept for n, c in r.decisions)),
        dead_letters=counts_by_name(window, ((r.decided_at, n, c) for r in kept for n, c in r.dead_letters)),
        receipts=len(kept),
        repeats=in_window - len(kept),
    )


def percentile(sorted_values: Sequence[float], share: float) -> float:
    """Nearest rank: the smallest value with at least `share` of the values at or below it."""
    rank = max(1, math.ceil(share * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass
class Latency:
    """Origin-to-retraction seconds per bucket of the origin's time."""

    matched: list[int]  # origins with their retraction, per bucket
    p50: list[float | None]
    p99: list[float | None]
    waiting: list[int]  # origins whose retraction is not on the revocations topic (yet)
    already: int = 0  # origins whose key was retracted before them (a repeated opt-out): nothing new to do
    worst: float | None = None

    @property
    def empty(self) -> bool:
        return not any(self.matched) and not any(self.waiting)


def latency(window: Window, origins: Sequence[Origin], retractions: Sequence[Retraction]) -> Latency:
    """Each origin in the window matched with the first retraction of one of its keys at or after it
    that no earlier origin took; p50 and p99 of the delays per bucket."""
    by_key: dict[str, list[int]] = defaultdict(list)
    for retraction in retractions:
        by_key[retraction.key].append(retraction.at)
    for times in by_key.values():
        times.sort()
    used: dict[str, int] = defaultdict(int)  # key -> how many of its retractions are taken, in time order
    delays: list[list[float]] = [[] for _ in range(window.buckets)]
    out = Latency([0] * window.buckets, [None] * window.buckets, [None] * window.buckets, [0] * window.buckets)
    for origin in sorted(origins, key=lambda o: o.at):
        bucket = window.index(origin.at)
        if bucket is None:
            continue
        found = _first_after(by_key, used, origin)
        if found is not None:
            key, position = found
            used[key] = position + 1
            delays[bucket].append((by_key[key][position] - origin.at) / 1000)
            out.matched[bucket] += 1
        elif any(by_key.get(k) and by_key[k][0] < origin.at for k in origin.keys):
            out.already += 1
        else:
            out.waiting[bucket] += 1
    for bucket, values in enumerate(delays):
        if values:
            values.sort()
            out.p50[bucket], out.p99[bucket] = percentile(values, 0.5), percentile(values, 0.99)
            out.worst = max(out.worst or 0.0, values[-1])
    return out


def _first_after(by_key: dict[str, list[int]], used: dict[str, int], origin: Origin) -> tuple[str, int] | None:
    """(key, index in its times) of the earliest retraction not taken yet, at or after the origin."""
    best: tuple[str, int] | None = None
    for key in origin.keys:
        times = by_key.get(key, [])
        position = max(used[key], bisect.bisect_left(times, origin.at))
        if position < len(times) and (best is None or times[position] < by_key[best[0]][best[1]]):
            best = (key, position)
    return best


def retraction_counts(window: Window, retractions: Sequence[Retraction]) -> Counts:
    return counts_by_name(window, ((r.at, r.reason, 1) for r in retractions))


@dataclass
class Lag:
    """The largest oldest_unacknowledged_seconds of each group per bucket (0 when nothing waits), from
    every replica's snapshots; and the last snapshot in the window."""

    by_group: dict[str, list[float | None]]
    last: Snapshot | None = None
    snapshots: int = 0


def recipients_lag(window: Window, snapshots: Sequence[Snapshot]) -> Lag:
    out = Lag({})
    for snapshot in sorted(snapshots, key=lambda s: s.taken_at):
        bucket = window.index(snapshot.taken_at)
        if bucket is None:
            continue
        out.snapshots += 1
        out.last = snapshot
        for recipient in snapshot.recipients:
            series = out.by_group.setdefault(recipient.group, [None] * window.buckets)
            waited = recipient.oldest_unacknowledged_seconds or 0.0
            current = series[bucket]
            series[bucket] = waited if current is None else max(current, waited)
    out.by_group = dict(sorted(out.by_group.items()))
    return out


@dataclass(frozen=True)
class VerificationSeries:
    runs: tuple[Verification, ...]  # in the window, by finished_at

    @property
    def last(self) -> Verification | None:
        return self.runs[-1] if self.runs else None


def verification_series(window: Window, results: Sequence[Verification]) -> VerificationSeries:
    runs = sorted((r for r in results if window.index(r.finished_at) is not None), key=lambda r: r.finished_at)
    return VerificationSeries(tuple(runs))


@dataclass(frozen=True)
class Provenance:
    """What the report was made of: how many records of each kind, and what was left out and why."""

    audit_topic: str
    signatures_checked: bool
    bad_signatures: int = 0
    undecodable: int = 0
    origins: dict[str, int] = field(default_factory=dict)  # opt-outs, content changes, ... read


@dataclass(frozen=True)
class Report:
    window: Window
    generated_at: int
    service_version: str
    provenance: Provenance
    receipts: ReceiptSeries
    optout_latency: Latency
    retractions: Counts
    retraction_latency: Latency
    lag: Lag
    verification: VerificationSeries


@dataclass(frozen=True)
class Inputs:
    """Everything read for a report (report_read.py)."""

    receipts: tuple[Receipt, ...] = ()
    verifications: tuple[Verification, ...] = ()
    snapshots: tuple[Snapshot, ...] = ()
    optouts: tuple[Origin, ...] = ()
    changes: tuple[Origin, ...] = ()  # content and account changes, consent withdrawals
    retractions: tuple[Retraction, ...] = ()


def build(window: Window, inputs: Inputs, provenance: Provenance, generated_at: int, version: str) -> Report:
    return Report(
        window=window,
        generated_at=generated_at,
        service_version=version,
        provenance=provenance,
        receipts=receipt_series(window, inputs.receipts),
        optout_latency=latency(window, inputs.optouts, inputs.retractions),
        retractions=retraction_counts(window, inputs.retractions),
        retraction_latency=latency(window, inputs.changes, inputs.retractions),
        lag=recipients_lag(window, inputs.snapshots),
        verification=verification_series(window, inputs.verifications),
    )
