"""Descriptions in Markdown, HTML or both become styled runs; the ODT carries them as spans,
links, line breaks and list paragraphs; the programme order puts days first."""

from __future__ import annotations

import io
import zipfile
from xml.etree import ElementTree

import pytest

from opsflow.booklet.indico import clean, read_export
from opsflow.booklet.markup import LINE_BREAK, Block, blocks, html_to_markdown
from opsflow.booklet.programme import programme
from opsflow.booklet.render import render_booklet
from opsflow.booklet.sample import generate_export

TEXT = "{urn:oasis:names:tc:opendocument:xmlns:text:1.0}"
XLINK = "{http://www.w3.org/1999/xlink}"


def test_plain_text_is_one_paragraph_untouched() -> None:
    assert blocks("  Beam dynamics at 3 GeV, 5 % better.  ") == [
        Block("p", (("Beam dynamics at 3 GeV, 5 % better.", None, None),))]
    assert blocks("") == [] and blocks(" \n ") == []


def test_markdown_becomes_styles_lists_links_and_breaks() -> None:
    found = blocks("# Aim\n\nSome **bold**, *italic* and ***both*** [here](https://e.org/a) "
                   "R&amp;D\n\n1. one\n2. two\n\nfirst line\nsecond line")
    assert found == [
        Block("h", (("Aim", None, None),)),
        Block("p", (("Some ", None, None), ("bold", "Strong", None), (", ", None, None),
                    ("italic", "Emphasis", None), (" and ", None, None),
                    ("both", "Strong Emphasis", None), (" ", None, None),
                    ("here", None, "https://e.org/a"), (" R&D", None, None))),
        Block("li", (("one", None, None),), "1. "),
        Block("li", (("two", None, None),), "2. "),
        Block("p", (("first line", None, None), LINE_BREAK, ("second line", None, None))),
    ]


@pytest.mark.parametrize(("html", "markdown"), [
    ("<p>We <b>measure </b>the <i>beam</i></p>", "We **measure** the *beam*"),
    ("<p>a<br>b</p><p>c</p>", "a\nb\n\nc"),
    ("<ul>\n    <li>one</li>\n    <li>two</li>\n</ul>", "- one\n- two"),
    ("<ol><li>x</li><li>y</li></ol>", "1. x\n2. y"),
    ("<h2>Method</h2>text", "## Method\n\ntext"),
    ('<a href="javascript:alert(1)">click</a> <a href="https://x.org">x</a>',
     "click [x](https://x.org)"),
    ("<script>steal()</script><style>p{}</style>kept <b></b>&amp; &lt;3", "kept & <3"),
    ("<div><span class='x'>inner</span></div>", "inner"),
])
def test_html_keeps_a_sanitized_subset_as_markdown(html: str, markdown: str) -> None:
    assert html_to_markdown(html) == markdown


def test_html_and_markdown_mixed_leave_no_marker() -> None:
    found = blocks("<p>Intro with **bold**</p>\n\n## Sub\n\n- <i>it</i> &amp; *em*")
    words = "".join(run[0] for block in found for run in block.runs)
    assert words == "Intro with boldSubit & em"
    assert [b.kind for b in found] == ["p", "h", "li"]


def test_clean_removes_what_xml_forbids_and_keeps_the_rest() -> None:
    assert clean("a\x00b\x08c\x0bd\x1fe\ufffef\uffffg\ud800h\udfffi\tj\nk\u00e9\U0001f600") == (
        "abcdefghi\tj\nk\u00e9\U0001f600")


def test_the_odt_carries_spans_links_breaks_and_list_paragraphs() -> None:
    export = generate_export(sessions=1, contributions=1, authors=1, abstract_chars=50, loose=0)
    contribution = export["results"][0]["sessions"][0]["contributions"][0]
    contribution["description"] = "**Bold** and [link](https://e.org)\nnext\n\n- item"
    contribution["track"] = "Beam\x07 dynamics"
    content = _content(render_booklet(read_export(export)))
    spans = {"".join(s.itertext()): s.get(f"{TEXT}style-name") for s in content.iter(f"{TEXT}span")}
    assert spans["Bold"] == "Strong"
    links = [(a.get(f"{XLINK}href"), "".join(a.itertext())) for a in content.iter(f"{TEXT}a")]
    assert links == [("https://e.org", "link")]
    assert len(list(content.iter(f"{TEXT}line-break"))) == 1
    items = [p for p in content.iter(f"{TEXT}p") if p.get(f"{TEXT}style-name") == "Abstract_20_List"]
    assert ["".join(p.itertext()) for p in items] == ["• item"]


def _content(odt: bytes) -> ElementTree.Element:
    with zipfile.ZipFile(io.BytesIO(odt)) as archive:
        return ElementTree.fromstring(archive.read("content.xml"))


def test_programme_interleaves_sessions_and_talks_by_day_and_time() -> None:
    export = generate_export(sessions=5, contributions=10, authors=1, abstract_chars=20, loose=0)
    event = export["results"][0]
    # Session 4 (index 4) is on Tuesday 09:00 Rome; a talk on Monday 10:00 UTC (12:00 Rome)
    # sits between Monday's 11:00 and 13:00 sessions; a talk without a start goes last.
    event["contributions"] = [
        {"title": "Monday talk", "code": "X1", "startDate": {"date": "2026-05-11",
                                                             "time": "10:00:00", "tz": "UTC"}},
        {"title": "Sometime", "code": "Z9"},
        {"title": "Sometime too", "code": "Z1"},
    ]
    adrift = event["sessions"][0]
    adrift["startDate"] = adrift["endDate"] = None  # a session without a start: at the end
    adrift_code = adrift["session"]["code"]
    plan = programme(read_export(export))
    assert [s.label for s in plan.unscheduled_sessions] == [adrift_code]
    days = [[getattr(i, "label", "") for i in day.items] for day in plan.days]
    assert [str(d.day) for d in plan.days] == ["2026-05-11", "2026-05-12"]
    expected = [["MOA00", "MOB01", "X1", "MOC02", "MPD03"], ["TOA04"]]
    assert days == [[c for c in day if c != adrift_code] for day in expected]
    assert [c.label for c in plan.unscheduled] == ["Z1", "Z9"]
