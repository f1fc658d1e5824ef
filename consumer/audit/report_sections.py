"""The effectiveness report's sections, one per plot, as the HTML page and its Markdown twin both show
them (consumer/audit/report_page.py): a title, what the plot shows and how to read it, the plot, a
summary, and the table of the plotted series. One model for both, so that they cannot disagree.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from consumer.audit import report_svg as svg
from consumer.audit.report_series import Counts, Latency, Report, Window

NO_DATA = "no data in the window"


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Section:
    id: str  # the <section>'s id; its <figure> is fig-<id>
    title: str
    caption: str  # what the plot shows and how to read it
    svg: str
    legend: tuple[tuple[str, str], ...]  # (name, colour)
    summary: tuple[str, ...]  # sentences; the first says "no data in the window" when there is none
    table: Table | None  # None: no data


def when(at_ms: int) -> str:
    return dt.datetime.fromtimestamp(at_ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def counts_table(window: Window, series: Counts) -> Table | None:
    """A row per bucket that has any count (the others are zero), a column per name."""
    rows = []
    for bucket in range(window.buckets):
        values = [series[name][bucket] for name in series]
        if any(values):
            rows.append((when(window.start(bucket)), *(str(v) for v in values), str(sum(values))))
    return Table(("bucket start", *series, "total"), tuple(rows)) if rows else None


def _legend(names: Sequence[str]) -> tuple[tuple[str, str], ...]:
    return tuple((name, svg.colour(i)) for i, name in enumerate(names))


def _counts_section(ident: str, title: str, caption: str, window: Window, series: Counts, unit: str) -> Section:
    totals = {name: sum(values) for name, values in series.items()}
    summary = (
        (f"{sum(totals.values()):,} in the window: " + ", ".join(f"{n} {c:,}" for n, c in totals.items()) + ".",)
        if totals
        else (f"{NO_DATA}.",)
    )
    return Section(
        ident,
        title,
        caption,
        svg.stacked_bars(title, window, series, unit),
        _legend(list(series)),
        summary,
        counts_table(window, series),
    )


def _latency_section(ident: str, title: str, caption: str, window: Window, found: Latency, what: str) -> Section:
    series = {"p50": found.p50, "p99": found.p99}
    rows = tuple(
        (
            when(window.start(b)),
            str(found.matched[b]),
            seconds(found.p50[b]),
            seconds(found.p99[b]),
            str(found.waiting[b]),
        )
        for b in range(window.buckets)
        if found.matched[b] or found.waiting[b]
    )
    if found.empty:
        summary: tuple[str, ...] = (f"{NO_DATA}.",)
    else:
        summary = (
            f"{sum(found.matched):,} {what} took effect in the window; the longest took {seconds(found.worst)} s."
            if any(found.matched)
            else f"none of the {what} in the window took effect yet.",
            f"{sum(found.waiting):,} have no retraction on the revocations topic yet.",
        )
        if found.already:
            summary += (f"{found.already:,} repeated one already in force (nothing new to retract).",)
    table = Table(("bucket start", "took effect", "p50 s", "p99 s", "waiting"), rows) if rows else None
    return Section(
        ident, title, caption, svg.lines(title, window, series, "seconds"), _legend(list(series)), summary, table
    )


def _lag_section(report: Report) -> Section:
    window, lag = report.window, report.lag
    title = "Recipients' acknowledgement lag"
    caption = (
        "For each consumer group that reads the training topic (the record of recipients, GDPR Art. 19): how long "
        "the oldest revocation it has not acknowledged (committed) had waited, the largest of the bucket's "
        "snapshots. A line that climbs is a recipient that does not apply revocations; 0 means nothing waits."
    )
    rows = tuple(
        (when(window.start(b)), *(seconds(lag.by_group[g][b]) for g in lag.by_group))
        for b in range(window.buckets)
        if any(lag.by_group[g][b] is not None for g in lag.by_group)
    )
    summary: tuple[str, ...] = (f"{NO_DATA}.",)
    if lag.last is not None:
        summary = (
            f"{lag.snapshots:,} snapshots in the window; the last, {when(lag.last.taken_at)}:",
            *(
                f"{r.group}: {'reads' if r.reads_revocations else 'does NOT read'} the revocations topic, "
                f"{r.unacknowledged:,} unacknowledged, "
                f"oldest waiting {seconds(r.oldest_unacknowledged_seconds) or '0'} s."
                for r in lag.last.recipients
            ),
        )
    table = Table(("bucket start", *lag.by_group), rows) if rows else None
    plot = svg.lines(title, window, lag.by_group, "seconds")
    return Section("recipients-lag", title, caption, plot, _legend(list(lag.by_group)), summary, table)


def _verification_section(report: Report) -> Section:
    window, runs = report.window, report.verification.runs
    title = "The verifier's results"
    caption = (
        "Each run of `training-filter audit verify` that finished in the window: its count of discrepancies, "
        "green when it passed, red when it did not. Below, the last run's result and its first discrepancies."
    )
    marks = [(r.finished_at, r.discrepancy_count, r.passed) for r in runs]
    last = report.verification.last
    summary: tuple[str, ...] = (f"{NO_DATA}.",)
    rows: tuple[tuple[str, ...], ...] = ()
    if last is not None:
        checked = (
            f"window {when(last.window_from) if last.window_from is not None else 'start'} to "
            f"{when(last.window_until) if last.window_until is not None else 'end'}"
        )
        summary = (
            f"The last run finished {when(last.finished_at)} and {'PASSED' if last.passed else 'FAILED'}: "
            f"{last.receipts:,} receipts and {last.records:,} records checked ({checked}), "
            f"{last.discrepancy_count:,} discrepancies.",
        )
        rows = tuple(
            (
                d.kind,
                d.topic or "",
                "" if d.partition is None else str(d.partition),
                "" if d.offset is None else str(d.offset),
                d.detail,
            )
            for d in last.discrepancies[:20]
        )
    table = Table(("kind", "topic", "partition", "offset", "detail"), rows) if rows else None
    legend = (("passed", svg.PASSED), ("failed", svg.FAILED)) if runs else ()
    return Section(
        "verification", title, caption, svg.outcomes(title, window, marks, "discrepancies"), legend, summary, table
    )


def sections(report: Report) -> list[Section]:
    window = report.window
    receipts = report.receipts
    return [
        _counts_section(
            "decisions",
            "Decisions by reason",
            "Input records decided in each bucket, by decision: eligible, or the first check that refused them "
            "(docs/policy.md), summed from the decision receipts. A repeated receipt (a batch decided again after a "
            "crash) is counted once. A sudden change of mix is worth a look: a new source, a policy change, a feed.",
            window,
            receipts.decisions,
            "records",
        ),
        _counts_section(
            "dead-letters",
            "Dead letters by cause",
            "Records that went to the dead-letter topic, by cause (the DLQ's tf.cause), from the receipts. "
            "They are never emitted; `training-filter dlq replay` decides them again once the cause is fixed.",
            window,
            receipts.dead_letters,
            "records",
        ),
        _latency_section(
            "optout-latency",
            "Opt-out to effect latency",
            "From an opt-out's arrival on the opt-out topic (its broker timestamp) to its revocation on the "
            "revocations topic (key: the user's pseudonym), by the opt-out's bucket: the median (p50) and the 99th "
            "percentile (p99). Records fetched after an opt-out is read are refused at once; this is the time until "
            "readers of the training topic are told to purge.",
            window,
            report.optout_latency,
            "opt-outs",
        ),
        _counts_section(
            "retractions",
            "Retractions by reason",
            "Retractions written on the revocations topic in each bucket, by reason (docs/retractions.md): "
            "opt-outs, withdrawals, deleted or corrected accounts, deleted, hidden or edited content, "
            "policy backfills.",
            window,
            report.retractions,
            "retractions",
        ),
        _latency_section(
            "retraction-latency",
            "Retraction latency",
            "From a content change, an account change or a consent withdrawal (its broker timestamp) to its "
            "retraction (content/, deleted/ or account/, consent/ keys), by the change's bucket: p50 and p99.",
            window,
            report.retraction_latency,
            "changes",
        ),
        _lag_section(report),
        _verification_section(report),
    ]
