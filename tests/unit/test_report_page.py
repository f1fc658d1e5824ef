"""The effectiveness report's page and its Markdown twin (consumer/audit/report_page.py), and the
command's options (consumer/commands/report.py): every section present, strictly well-formed, no
script and nothing fetched, the twin's tables the plotted series, bad options exit 2."""

from __future__ import annotations

import argparse
import io
import re
import xml.etree.ElementTree as ET

import pytest

from consumer.audit import report_page
from consumer.audit.report_series import (
    DAY_MS,
    Discrepancy,
    Inputs,
    Origin,
    Provenance,
    Receipt,
    Recipient,
    Report,
    Retraction,
    Snapshot,
    Verification,
    Window,
    build,
)
from consumer.cli import build_parser
from consumer.commands.report import main_report

UNTIL = 1_767_225_600_000
WEEK = Window.ending(UNTIL, 7 * DAY_MS)
SVG = "{http://www.w3.org/2000/svg}svg"
SECTIONS = (
    "decisions",
    "dead-letters",
    "optout-latency",
    "retractions",
    "retraction-latency",
    "recipients-lag",
    "verification",
)


def full_inputs() -> Inputs:
    start = WEEK.since_ms
    hour = 3_600_000
    receipts = (
        *(
            Receipt(start + i * hour, "posts.v1", 0, i * 10, i * 10 + 9, (("eligible", 8), ("under_age", 2)), ())
            for i in range(24)
        ),
        Receipt(start + 5, "posts.v1", 1, 0, 0, (("malformed", 1),), (("bad_body", 1),)),
    )
    optouts = tuple(Origin(start + i * hour, (f"p{i}",)) for i in range(10))
    retractions = (
        *(Retraction(o.at + 2000, o.keys[0], "opted_out") for o in optouts[:8]),
        Retraction(start + 3 * hour + 700, "content/r1", "content_deleted"),
    )
    snapshots = tuple(
        Snapshot(
            start + i * hour,
            "r1",
            (Recipient("ml-<team>", True, 0, None), Recipient("late & slow", False, 4, 90.0 * i)),
        )
        for i in range(12)
    )
    verification = Verification(
        start + 2 * DAY_MS,
        start + 2 * DAY_MS + 60_000,
        start,
        None,
        25,
        241,
        False,
        (Discrepancy("gap", "posts.v1", 0, 240, "offsets 240 to 249 are covered by no receipt"),),
        1,
    )
    return Inputs(
        receipts, (verification,), snapshots, optouts, (Origin(start + 3 * hour, ("content/r1",)),), retractions
    )


def report_of(inputs: Inputs, provenance: Provenance | None = None) -> Report:
    made = provenance or Provenance("training-filter.audit.v1", True, bad_signatures=3)
    return build(WEEK, inputs, made, UNTIL, "0.1.0")


def parse(page: str) -> ET.Element:
    assert page.startswith("<!DOCTYPE html>\n")
    return ET.fromstring(page.split("\n", 1)[1])  # strict: an unclosed or unescaped tag raises


def test_the_page_is_well_formed_with_every_plot_a_figure_with_its_svg_and_caption():
    root = parse(report_page.html(report_of(full_inputs())))
    figures = {f.get("id"): f for f in root.iter("figure")}
    assert list(figures) == [f"fig-{s}" for s in SECTIONS]
    for ident, figure in figures.items():
        assert figure.find(SVG) is not None, ident
        assert figure.find("figcaption") is not None and figure.find("figcaption").text, ident
    assert [s.get("id") for s in root.iter("section")] == list(SECTIONS)

    def bars(ident: str) -> int:
        return sum(1 for e in figures[ident].iter("{http://www.w3.org/2000/svg}rect") if e.get("class") == "bar")

    assert bars("fig-decisions") == 24 * 2 + 1, "a bar per decision per bucket with records"
    assert (bars("fig-dead-letters"), bars("fig-retractions")) == (1, 9)


def test_the_page_is_self_contained_and_escapes_every_name():
    page = report_page.html(report_of(full_inputs()))
    root = parse(page)
    assert not list(root.iter("script"))
    assert not [e for e in root.iter() if any(k in e.attrib for k in ("src", "href"))], "nothing is fetched"
    assert "ml-&lt;team&gt;" in page and "late &amp; slow" in page
    assert "<team>" not in page


def test_the_page_says_how_many_records_were_not_signed_correctly_or_that_none_were_checked():
    checked = report_page.html(report_of(full_inputs()))
    assert "not signed correctly, and left out of this report: 3 records." in checked
    unchecked = report_page.html(report_of(full_inputs(), Provenance("audit", signatures_checked=False)))
    assert "Signatures NOT checked" in unchecked


def test_an_empty_window_says_no_data_in_every_section_and_still_draws_every_figure():
    page = report_page.html(report_of(Inputs()))
    root = parse(page)
    for section in root.iter("section"):
        figure = section.find("figure")
        assert figure is not None and figure.find(SVG) is not None
        texts = "".join(section.itertext())
        assert "no data in the window" in texts, section.get("id")
    markdown = report_page.markdown(report_of(Inputs()))
    assert markdown.count("no data in the window") == len(SECTIONS)


def test_the_markdown_twin_has_the_same_sections_and_tables_of_the_same_series():
    report = report_of(full_inputs())
    root = parse(report_page.html(report))
    markdown = report_page.markdown(report)
    assert re.findall(r"^## (.+)$", markdown, re.M) == ["".join(h.itertext()) for h in root.iter("h2")]
    decisions = markdown.split("## Decisions by reason")[1].split("## ")[0]
    rows = [line.split("|")[1:-1] for line in decisions.splitlines() if re.match(r"\| \d{4}-", line)]
    assert len(rows) == 24
    assert sum(int(r[1]) for r in rows) == sum(report.receipts.decisions["eligible"]) == 192
    latency = markdown.split("## Opt-out to effect latency")[1].split("## ")[0]
    assert "| bucket start | took effect | p50 s | p99 s | waiting |" in latency
    assert "8 opt-outs took effect in the window; the longest took 2.000 s." in latency
    assert "2 have no retraction on the revocations topic yet." in latency
    verification = markdown.split("## The verifier's results")[1]
    assert "FAILED" in verification and "offsets 240 to 249 are covered by no receipt" in verification
    assert "late \\& slow" not in markdown and "late & slow" in markdown


def run(*argv: str) -> tuple[int, str]:
    args = build_parser().parse_args(["report", *argv])
    err = io.StringIO()
    code = main_report(args, io.StringIO(), err)
    return code, err.getvalue()


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--window", "7 days"], "--window '7 days': give a number and a unit"),
        (["--window", "500d"], "at most 366 days"),
        (["--until", "2026-01-01T00:00:00"], "--until must carry a UTC offset"),
        (["--until", "yesterday"], "--until must be ISO-8601 with an offset, or epoch ms"),
    ],
)
def test_a_bad_option_exits_2_saying_what_to_fix(argv, says):
    code, err = run(*argv)
    assert code == 2
    assert says in err, err


def test_an_out_that_is_a_file_and_a_short_audit_key_exit_2(tmp_path, monkeypatch):
    afile = tmp_path / "file"
    afile.write_text("x")
    code, err = run("--out", str(afile))
    assert (code, "--out" in err and "not a folder" in err) == (2, True)
    monkeypatch.setenv("TF_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("TF_HMAC_KEY", "k" * 32)
    monkeypatch.setenv("TF_AUDIT_KEY", "short")
    code, err = run("--out", str(tmp_path / "out"))
    assert code == 2 and "TF_AUDIT_KEY: the key is 5 bytes; it must be at least 32" in err, err
    assert not (tmp_path / "out").exists(), "nothing is written on a configuration error"


def test_the_parser_takes_the_documented_options():
    args = build_parser().parse_args(["report"])
    assert (args.window, args.until, args.out) == ("7d", None, ".")
    assert isinstance(build_parser().parse_args(["report", "--window", "24h", "--out", "x"]), argparse.Namespace)


def test_a_missing_chromium_fails_the_browser_test_saying_how_to_install_it(monkeypatch, tmp_path):
    from tests import browser

    monkeypatch.delenv("TF_TEST_CHROMIUM", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pytest.fail.Exception, match=r"make browser.*apt-get install chromium"):
        browser.chromium()
