"""`training-filter report` against the real broker, rendered in a real headless chromium: the real
service decides posts and writes signed receipts and the opt-outs' and a deletion's retractions; the
test adds a signed verification result, recipients' snapshots from two replicas and a receipt whose
counts were altered after signing. The report counts what the service decided, leaves the altered
receipt out and says so, and its page has every plot and no script error in the browser.

The browser checks are shown to be able to fail first: a page with a script error, and one with a
figure without its plot."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from consumer.audit import receipts as contract
from consumer.wire.codec import CONTENT_CHANGE, OPTOUT, POST, Codec
from tests import samples
from tests.browser import render
from tests.harness import HMAC_KEY, Topics, produce, read_all

pytestmark = pytest.mark.integration
CODEC = Codec()
AUDIT_KEY = "audit-key-for-the-report-tests-0123456"
FIGURES = {
    f"fig-{s}"
    for s in (
        "decisions",
        "dead-letters",
        "optout-latency",
        "retractions",
        "retraction-latency",
        "recipients-lag",
        "verification",
    )
}
ADULT, MINOR = (1990 - 1970) * 365, (2015 - 1970) * 365  # birth dates as days since the epoch


def test_the_browser_check_catches_a_script_error_and_a_figure_without_its_plot(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text(
        '<!DOCTYPE html><html><head><title>t</title></head><body><figure id="fig-a"><svg></svg></figure>'
        '<figure id="fig-b"><p>no plot</p></figure><script>notDefined();</script></body></html>'
    )
    rendered = render(page)
    assert any("Uncaught ReferenceError" in line for line in rendered.console), rendered.console
    assert rendered.figures == {"fig-a": 1, "fig-b": 0}
    assert rendered.scripts == 1


def post(post_id: str, author: str, born: int, created: int) -> bytes:
    return CODEC.encode(
        POST,
        {**samples.POST, "post_id": post_id, "author_id": author, "author_birth_date": born, "created_at": created},
    )


def run_service(kafka: Any, topics: Topics, new_service: Any) -> None:
    """The real service: 6 eligible posts, 3 of a minor, 1 that does not decode; 2 opt-outs; then the
    deletion of an emitted post."""
    now = int(time.time() * 1000)
    optouts = [
        (topics.optouts, u.encode(), CODEC.encode(OPTOUT, {"user_id": u, "opted_out_at": now, "source": "form"}))
        for u in ("u-opt-0", "u-opt-1")
    ]
    produce(kafka.bootstrap, optouts)
    posts = [(topics.posts, b"u-adult", post(f"adult/{i}", "u-adult", ADULT, now)) for i in range(6)]
    posts += [(topics.posts, b"u-minor", post(f"minor/{i}", "u-minor", MINOR, now)) for i in range(3)]
    posts.append((topics.posts, b"u-bad", b"not avro at all"))
    produce(kafka.bootstrap, posts)
    # No recipients scan of its own: the test writes the record of recipients it expects on the page.
    service = new_service(TF_AUDIT_KEY=AUDIT_KEY, TF_RECIPIENTS_INTERVAL_SECONDS="0").start()
    service.wait_ready(90)
    service.wait_processed(len(posts))
    service.wait_settled()
    deleted = {"record_id": "adult/0", "user_id": "u-adult", "change": "DELETED", "at": now, "source": "post_service"}
    produce(
        kafka.bootstrap,
        [(topics.content_changes, b"adult/0", CODEC.encode(CONTENT_CHANGE, {**deleted, "replaced_by": None}))],
    )
    wait_for(lambda: {b"content/adult/0"} <= {m.key() for m in read_all(kafka.bootstrap, topics.revocations)})
    service.stop()


def wait_for(condition: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


def add_audit_records(kafka: Any, topics: Topics) -> None:
    """A verification result and two replicas' recipients' snapshots, signed; one receipt of the service
    copied with its counts altered (not signed again): a tampered record the report must leave out."""
    key = AUDIT_KEY.encode()
    now = int(time.time() * 1000)
    verification = contract.sign(
        CODEC,
        key,
        {**samples.VERIFICATION, "started_at": now - 60_000, "finished_at": now - 1000},
        contract.VERIFICATION,
    )
    snapshots = [
        contract.sign(
            CODEC, key, {**samples.RECIPIENTS, "taken_at": now - 2000 + i, "replica": f"r{i}"}, contract.RECIPIENTS
        )
        for i in range(2)
    ]
    real = next(m for m in read_all(kafka.bootstrap, topics.audit) if m.key().startswith(b"receipt/"))
    altered = CODEC.decode_own(real.value(), contract.RECEIPT)
    altered["decisions"] = [{"name": "eligible", "records": 1000}]
    produce(
        kafka.bootstrap,
        [
            (topics.audit, f"verification/{now}".encode(), CODEC.encode(contract.VERIFICATION, verification)),
            *(
                (topics.audit, f"recipients/r{i}".encode(), CODEC.encode(contract.RECIPIENTS, s))
                for i, s in enumerate(snapshots)
            ),
            (topics.audit, real.key(), CODEC.encode(contract.RECEIPT, altered)),
        ],
    )


def report(kafka: Any, topics: Topics, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        **topics.env(),
        "TF_BOOTSTRAP_SERVERS": kafka.bootstrap,
        "TF_HMAC_KEY": HMAC_KEY.decode(),
        "TF_AUDIT_KEY": AUDIT_KEY,
    }
    command = [sys.executable, "-m", "consumer.cli", "report", "--out", str(out), *args]
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=180, check=False)


def section(markdown: str, title: str) -> str:
    return markdown.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_the_report_of_a_real_run_counts_its_decisions_and_renders_every_plot_without_errors(
    kafka, topics, new_service, tmp_path
):
    run_service(kafka, topics, new_service)
    add_audit_records(kafka, topics)
    result = report(kafka, topics, tmp_path / "out", "--window", "1h")
    assert result.returncode == 0, result.stderr[-3000:]
    markdown = (tmp_path / "out" / "report.md").read_text()

    decisions = section(markdown, "Decisions by reason")
    assert "10 in the window: eligible 6, malformed 1, under_age 3." in decisions, decisions
    assert "bad_framing 1" in section(markdown, "Dead letters by cause")
    assert "not signed correctly, and left out of this report: 1 records." in markdown
    assert "2 opt-outs took effect in the window" in section(markdown, "Opt-out to effect latency")
    retractions = section(markdown, "Retractions by reason")
    assert "content_deleted 1" in retractions and "opted_out 2" in retractions, retractions
    assert "1 changes took effect in the window" in section(markdown, "Retraction latency")
    lag = section(markdown, "Recipients' acknowledgement lag")
    assert "analytics: does NOT read the revocations topic, 12 unacknowledged, oldest waiting 3600.500 s." in lag
    verification = section(markdown, "The verifier's results")
    assert "FAILED" in verification and "offsets 5000-5099 have no receipt" in verification
    for secret in ("u-adult", "u-opt-0", "u-minor"):
        assert secret not in markdown, "no user id in the report"

    rendered = render(tmp_path / "out" / "report.html")
    assert set(rendered.figures) == FIGURES, rendered.figures
    assert all(count == 1 for count in rendered.figures.values()), "every figure holds its plot"
    assert rendered.console == [], "the page logs nothing and throws nothing"
    assert rendered.scripts == 0
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", rendered.dom), "nothing is fetched"


def test_an_empty_window_is_a_report_that_says_so(kafka, topics, tmp_path):
    result = report(kafka, topics, tmp_path, "--window", "2h", "--until", "2020-01-01T00:00:00Z")
    assert result.returncode == 0, result.stderr[-3000:]
    markdown = (tmp_path / "report.md").read_text()
    assert markdown.count("no data in the window") == 7
    rendered = render(tmp_path / "report.html")
    assert set(rendered.figures) == FIGURES and rendered.console == []


def test_an_unreadable_audit_topic_exits_1_naming_it(kafka, topics, tmp_path):
    result = report(kafka, topics, tmp_path, "--window", "1h")
    assert result.returncode == 0, result.stderr  # the test's topics exist: an empty report
    gone = Topics(*(f"{getattr(topics, f.name)}-missing" for f in dataclasses.fields(topics)))
    missing = report(kafka, gone, tmp_path / "missing", "--window", "1h")
    assert missing.returncode == 1
    assert f"cannot read {gone.audit}" in missing.stderr, missing.stderr
    assert not (tmp_path / "missing" / "report.html").exists()
