"""The effectiveness report's plots as inline SVG, drawn in Python: no JavaScript, no font or style
sheet fetched, nothing but the page itself, so that the report opens offline and can be archived as
one file. Each function returns one `<svg>` element; every text in it is escaped. A hover shows a
point's value through SVG's own `<title>`, which needs no script.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from html import escape

from consumer.audit.report_series import HOUR_MS, Window

WIDTH, HEIGHT = 880, 240
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 12, 36
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
# Tableau 10: distinguishable, also for the common colour-vision deficiencies.
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac")
PASSED, FAILED = "#59a14f", "#e15759"


def colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten at or above `value` (1 for nothing)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value * (1 - 1e-9):
            return float(step * power)
    return float(10 * power)


def number(value: float) -> str:
    if value == int(value):
        return f"{int(value):,}"
    return f"{value:,.3g}" if abs(value) >= 1 else f"{value:.3g}"


def time_label(at_ms: int, bucket_ms: int) -> str:
    when = dt.datetime.fromtimestamp(at_ms / 1000, dt.UTC)
    return when.strftime("%m-%d %H:%M" if bucket_ms < 24 * HOUR_MS else "%Y-%m-%d")


def _open(label: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{escape(label)}" width="{WIDTH}" '
        f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">'
    ]


def _axes(window: Window, y_max: float, unit: str) -> list[str]:
    """The frame, four y gridlines labelled in `unit`, and at most eight x ticks on bucket starts."""
    parts = [f'<rect x="{LEFT}" y="{TOP}" width="{PLOT_W}" height="{PLOT_H}" fill="none" stroke="#999"/>']
    for i in range(5):
        y = TOP + PLOT_H - PLOT_H * i / 4
        parts.append(f'<line x1="{LEFT}" x2="{LEFT + PLOT_W}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">{escape(number(y_max * i / 4))}</text>')
    parts.append(
        f'<text x="12" y="{TOP + PLOT_H / 2:.0f}" transform="rotate(-90 12 {TOP + PLOT_H / 2:.0f})" '
        f'text-anchor="middle">{escape(unit)}</text>'
    )
    span = window.until_ms - window.since_ms
    step = tick_step(window)
    for at in range(-(-window.since_ms // step) * step, window.until_ms, step):
        x = LEFT + PLOT_W * (at - window.since_ms) / span
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP + PLOT_H}" y2="{TOP + PLOT_H + 4}" stroke="#999"/>')
        label = time_label(at, step)
        parts.append(f'<text x="{x:.1f}" y="{TOP + PLOT_H + 16}" text-anchor="middle">{escape(label)}</text>')
    parts.append(
        f'<text x="{LEFT + PLOT_W}" y="{HEIGHT - 4}" text-anchor="end">UTC, one bucket = '
        f"{escape(duration(window.bucket_ms))}</text>"
    )
    return parts


# Tick spacings: whole minutes, hours or days, so that ticks fall on times one reads at a glance (UTC).
TICK_STEPS_MS = tuple(
    m * 60_000 for m in (1, 5, 15, 30, 60, 180, 360, 720, 1440, 2 * 1440, 7 * 1440, 14 * 1440, 28 * 1440)
)


def tick_step(window: Window) -> int:
    """The smallest spacing of at most eight ticks over the window."""
    span = window.until_ms - window.since_ms
    return next((s for s in TICK_STEPS_MS if span / s <= 8), TICK_STEPS_MS[-1])


def duration(millis: int) -> str:
    for unit, size in (("week", 7 * 24 * HOUR_MS), ("day", 24 * HOUR_MS), ("hour", HOUR_MS), ("minute", 60_000)):
        if millis % size == 0:
            count = millis // size
            return f"{count} {unit}" + ("s" if count != 1 else "")
    return f"{millis} ms"


def empty(label: str, message: str = "no data in the window") -> str:
    parts = _open(label)
    parts.append(f'<rect x="{LEFT}" y="{TOP}" width="{PLOT_W}" height="{PLOT_H}" fill="#fafafa" stroke="#ccc"/>')
    parts.append(
        f'<text class="no-data" x="{LEFT + PLOT_W / 2}" y="{TOP + PLOT_H / 2}" text-anchor="middle" '
        f'font-size="14" fill="#666">{escape(message)}</text>'
    )
    return "".join(parts) + "</svg>"


def stacked_bars(label: str, window: Window, series: dict[str, list[int]], unit: str) -> str:
    """One bar per bucket, stacked by name in the order given (the legend's)."""
    totals = [sum(values[b] for values in series.values()) for b in range(window.buckets)]
    if not any(totals):
        return empty(label)
    y_max = nice_ceiling(max(totals))
    parts = _open(label) + _axes(window, y_max, unit)
    width = PLOT_W / window.buckets
    for bucket in range(window.buckets):
        base = 0
        for index, (name, values) in enumerate(series.items()):
            count = values[bucket]
            if not count:
                continue
            y = TOP + PLOT_H - PLOT_H * (base + count) / y_max
            height = PLOT_H * count / y_max
            x = LEFT + width * bucket
            tip = f"{time_label(window.start(bucket), window.bucket_ms)} {name}: {count:,}"
            parts.append(
                f'<rect class="bar" x="{x:.2f}" y="{y:.2f}" width="{max(width - 0.5, 0.5):.2f}" '
                f'height="{height:.2f}" fill="{colour(index)}"><title>{escape(tip)}</title></rect>'
            )
            base += count
    return "".join(parts) + "</svg>"


def lines(label: str, window: Window, series: dict[str, list[float | None]], unit: str) -> str:
    """One line per name through the buckets that have a value; a gap where a bucket has none."""
    values = [v for points in series.values() for v in points if v is not None]
    if not values:
        return empty(label)
    y_max = nice_ceiling(max(values))
    parts = _open(label) + _axes(window, y_max, unit)
    width = PLOT_W / window.buckets
    for index, (name, points) in enumerate(series.items()):
        runs: list[list[str]] = [[]]
        for bucket, value in enumerate(points):
            if value is None:
                runs.append([])
                continue
            x = LEFT + width * (bucket + 0.5)
            y = TOP + PLOT_H - PLOT_H * value / y_max
            runs[-1].append(f"{x:.2f},{y:.2f}")
            tip = f"{time_label(window.start(bucket), window.bucket_ms)} {name}: {number(value)} {unit}"
            parts.append(
                f'<circle class="point" cx="{x:.2f}" cy="{y:.2f}" r="2.5" fill="{colour(index)}">'
                f"<title>{escape(tip)}</title></circle>"
            )
        for run in runs:
            if len(run) > 1:
                parts.append(
                    f'<polyline class="line" points="{" ".join(run)}" fill="none" stroke="{colour(index)}" '
                    'stroke-width="1.5"/>'
                )
    return "".join(parts) + "</svg>"


def outcomes(label: str, window: Window, runs: Sequence[tuple[int, int, bool]], unit: str) -> str:
    """One mark per run at its time: its count of findings, green when it passed, red when not."""
    if not runs:
        return empty(label)
    y_max = nice_ceiling(max(count for _, count, _ in runs))
    parts = _open(label) + _axes(window, y_max, unit)
    span = window.until_ms - window.since_ms
    for at, count, passed in runs:
        x = LEFT + PLOT_W * (at - window.since_ms) / span
        y = TOP + PLOT_H - PLOT_H * count / y_max
        tip = f"{time_label(at, 60_000)}: {'passed' if passed else 'failed'}, {count:,} discrepancies"
        parts.append(
            f'<circle class="run" cx="{x:.2f}" cy="{y:.2f}" r="5" fill="{PASSED if passed else FAILED}">'
            f"<title>{escape(tip)}</title></circle>"
        )
    return "".join(parts) + "</svg>"
