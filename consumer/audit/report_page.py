"""The effectiveness report written out: one self-contained HTML page (inline SVG and an inline style
sheet, no script, nothing fetched) and its Markdown twin with the same sections and the plotted
series as tables. The HTML is also well-formed XML, so that a test can parse it strictly.
"""

from __future__ import annotations

from html import escape

from consumer.audit.report_sections import Section, Table, sections, when
from consumer.audit.report_series import Report
from consumer.audit.report_svg import duration

TITLE = "training-filter: effectiveness report"
_STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 920px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
figure { margin: 0.5em 0; } figcaption { color: #444; font-size: 0.9em; margin-top: 0.3em; }
ul.legend { list-style: none; padding: 0; margin: 0.3em 0; }
ul.legend li { display: inline-block; margin-right: 1.2em; font-size: 0.9em; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; margin-right: 0.3em; vertical-align: middle; }
table { border-collapse: collapse; font-size: 0.85em; } td, th { border: 1px solid #ddd; padding: 2px 6px; }
td { text-align: right; } .warning { color: #b00; font-weight: bold; }
"""


def header_lines(report: Report) -> list[str]:
    window, made = report.window, report.provenance
    lines = [
        f"Window: {when(window.since_ms)} to {when(window.until_ms)}, in buckets of {duration(window.bucket_ms)}.",
        f"Generated {when(report.generated_at)} by training-filter {report.service_version} from the audit topic "
        f"{made.audit_topic} and the opt-out, change and revocations topics.",
        f"Receipts: {report.receipts.receipts:,} in the window"
        + (f" ({report.receipts.repeats:,} repeated receipts counted once)." if report.receipts.repeats else "."),
    ]
    if made.origins:
        lines.append(
            "Read from the start of the window: " + ", ".join(f"{n} {c:,}" for n, c in made.origins.items()) + "."
        )
    if made.signatures_checked:
        lines.append(
            f"Signatures checked with the audit key: not signed correctly, and left out of this report: "
            f"{made.bad_signatures:,} records."
        )
    else:
        lines.append(
            "Signatures NOT checked: no audit key is configured (TF_AUDIT_KEY_FILE or TF_AUDIT_KEY); "
            "every record was taken as it is."
        )
    if made.undecodable:
        lines.append(f"{made.undecodable:,} records did not decode and are left out.")
    return lines


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in table.headers)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in table.rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_section(section: Section) -> str:
    legend = "".join(
        f'<li><span class="swatch" style="background:{c}"></span>{escape(name)}</li>' for name, c in section.legend
    )
    summary = "".join(f"<p>{escape(line)}</p>" for line in section.summary)
    table = (
        f"<details><summary>The numbers ({len(section.table.rows)} rows)</summary>"
        f"{_html_table(section.table)}</details>"
        if section.table is not None
        else ""
    )
    return (
        f'<section id="{section.id}"><h2>{escape(section.title)}</h2>'
        f'<figure id="fig-{section.id}">{section.svg}'
        + (f'<ul class="legend">{legend}</ul>' if legend else "")
        + f"<figcaption>{escape(section.caption)}</figcaption></figure>{summary}{table}</section>"
    )


def html(report: Report) -> str:
    made = report.provenance
    warning = made.bad_signatures > 0 or not made.signatures_checked
    head = "".join(
        f'<p class="warning">{escape(line)}</p>'
        if warning and line.startswith("Signatures")
        else f"<p>{escape(line)}</p>"
        for line in header_lines(report)
    )
    body = "".join(_html_section(s) for s in sections(report))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"/>'
        '<meta name="viewport" content="width=device-width, initial-scale=1"/>'
        f"<title>{escape(TITLE)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{escape(TITLE)}</h1>{head}{body}</body></html>\n"
    )


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(table: Table) -> list[str]:
    lines = ["| " + " | ".join(_md_cell(h) for h in table.headers) + " |"]
    lines.append("|" + "---|" * len(table.headers))
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
    return lines


def markdown(report: Report) -> str:
    lines = [f"# {TITLE}", ""]
    lines += [line for text in header_lines(report) for line in (text, "")]
    for section in sections(report):
        lines += [f"## {section.title}", "", section.caption, ""]
        lines += [line for text in section.summary for line in (text, "")]
        if section.table is not None:
            lines += [*_md_table(section.table), ""]
    return "\n".join(lines).rstrip("\n") + "\n"
