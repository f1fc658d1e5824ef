"""Every relative link and #anchor in the repository's markdown resolves: to a file or folder of the
checkout, and to a heading (GitHub's anchor of it) of the page it points at."""

from __future__ import annotations

from pathlib import Path

from consumer.devtools.docs import ROOT
from consumer.devtools.docs.links import anchors, check, slug, targets
from consumer.devtools.docs.regions import pages


def test_every_relative_link_and_anchor_in_the_docs_resolves():
    checked = pages(ROOT)
    assert {"README.md", "SECURITY.md", "CHANGELOG.md", "CONTRIBUTING.md"} <= {p.name for p in checked}
    assert len([p for p in checked if p.is_relative_to(ROOT / "docs")]) >= 8
    broken = [str(b) for page in checked for b in check(page, ROOT)]
    assert not broken, "\n".join(broken)


def test_the_readme_is_a_front_door():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    assert "```mermaid" in readme
    assert "make demo" in readme and "make test" in readme


def test_slugs_are_githubs():
    assert slug("`training-filter check`: the policy debugger") == "training-filter-check-the-policy-debugger"
    assert slug("`training-filter.dlq.v1`: dead letters") == "training-filterdlqv1-dead-letters"
    assert (
        slug("Scaling, and why the ceiling is the partition count")
        == "scaling-and-why-the-ceiling-is-the-partition-count"
    )
    assert slug("The shadow policy's overhead") == "the-shadow-policys-overhead"
    assert slug("TrainingFilterAbsent") == "trainingfilterabsent"


def test_anchors_number_repeated_headings_and_ignore_code():
    text = '# A\n## Notes\n```\n## Not a heading\n```\n### Notes\n<a id="here"></a>\n'
    assert anchors(text) == {"a", "notes", "notes-1", "here"}


def test_links_in_code_and_web_addresses_are_not_checked():
    text = "[a](x.md) `[b](y.md)`\n```\n[c](z.md)\n```\n[d](https://example.com) [e](#top)\n[f]: g.md\n"
    assert targets(text) == ["x.md", "#top", "g.md"]


def test_broken_links_are_found(tmp_path: Path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other\n## A section\n")
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "# Page\n[ok](other.md#a-section) [self](#page) [folder](../docs)\n"
        "[gone](missing.md) [no anchor](other.md#nowhere) [no self](#nothing) [out](../../elsewhere.md)\n"
    )
    assert [(b.target, b.why) for b in check(page, tmp_path)] == [
        ("missing.md", "no such file"),
        ("other.md#nowhere", "other.md has no heading #nowhere"),
        ("#nothing", "page.md has no heading #nothing"),
        ("../../elsewhere.md", "leaves the repository"),
    ]
