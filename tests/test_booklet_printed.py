"""The booklet as a conference prints it, read from the PDF that LibreOffice makes of the ODT
(`pdftotext`, page by page): contents with page numbers that are right, a footer with the page
number, programme order across days, the unscheduled part, rendered abstracts, cleaned text,
and the author index. One booklet is converted once and shared by every assertion (LibreOffice
takes seconds per conversion)."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from opsflow.booklet.indico import read_export
from opsflow.booklet.options import BookletOptions
from opsflow.booklet.pdf import PdfError, libreoffice, odt_to_pdf
from opsflow.booklet.render import render_booklet
from opsflow.booklet.sample import generate_export
from tests.conftest import unavailable

TITLE = "International Particle Accelerator Conference"
MARKUP_ABSTRACT = (
    "<p>Our <b>bold claim </b>&amp; <i>gentle</i> result.</p><script>steal(cookies)</script>"
    "<style>p { color: red }</style>\n\n## Method\n\nWe used **strong magnets** and "
    "*fine tuning*:\n\n- first item\n- second [item](https://example.org/x)\n\n"
    "Line one\nline two")
DIRTY = "\x07\ufffe\uffff\ud800\x0b\x1f"  # each forbidden in XML 1.0


def _at(day: int, hour: int, minute: int = 0) -> dict[str, str]:
    return {"date": f"2026-05-{day:02d}", "time": f"{hour:02d}:{minute:02d}:00", "tz": "UTC"}


def _person(first: str, last: str, affiliation: str) -> dict:
    return {"first_name": first, "last_name": last, "fullName": f"{first} {last}",
            "affiliation": affiliation}


def printed_export() -> dict:
    """Monday sessions; Thursday talks outside sessions; a Friday session; two contributions
    without a start; an abstract in HTML and Markdown; forbidden characters in every field."""
    export = copy.deepcopy(generate_export(sessions=4, contributions=16, authors=3,
                                           abstract_chars=500, poster_every=0, loose=0))
    event = export["results"][0]
    friday = next(s for s in event["sessions"] if s["session"]["code"] == "MOA00")
    friday["startDate"], friday["endDate"] = _at(15, 7), _at(15, 8, 30)  # 09:00 in Rome
    for n, contribution in enumerate(friday["contributions"]):
        contribution["startDate"] = _at(15, 7 + n // 3, 20 * (n % 3))
    zoe = _person(f"Zoë{DIRTY}", "Quantum", f"Institut{DIRTY} X")
    talk = {"title": f"Thursday talk A{DIRTY}", "code": "THU1", "duration": 20,
            "startDate": _at(14, 12), "description": MARKUP_ABSTRACT,
            "track": f"Beam{DIRTY} dynamics", "type": f"Oral{DIRTY}", "board_number": f"B{DIRTY}7",
            "speakers": [zoe], "primaryauthors": [zoe], "coauthors": []}
    event["contributions"] = [
        {**talk, "title": "Thursday talk B", "code": "THU2", "startDate": _at(14, 14),
         "description": "Plain words."},
        {"title": "Unscheduled idea two", "code": "ZU02", "description": "Later."},
        talk,
        {"title": "Unscheduled idea one", "code": "ZU01", "description": "Sometime.",
         "primaryauthors": [_person("Ada", "Nowhen", "ESS")]},
    ]
    return export


@dataclass
class Printed:
    pages: list[str]  # pdftotext -layout of each page, page 1 first
    odt: bytes

    def page(self, number: int) -> str:
        return " ".join(self.pages[number - 1].split())

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.pages).split())

    def body(self) -> str:
        """Everything after the contents (which repeat every heading)."""
        first_day = next(n for n in range(1, len(self.pages) + 1)
                         if "Chair:" in self.page(n))
        return " ".join(" ".join(self.pages[first_day - 1:]).split())


def _pdftotext(pdf: Path, page: int) -> str:
    done = subprocess.run(["pdftotext", "-layout", "-f", str(page), "-l", str(page), str(pdf),
                           "-"], check=True, capture_output=True, timeout=60)
    return done.stdout.decode()


@pytest.fixture(scope="module")
def printed(tmp_path_factory: pytest.TempPathFactory) -> Printed:
    if libreoffice() is None or shutil.which("pdftotext") is None:
        unavailable("LibreOffice or pdftotext", "soffice or pdftotext not on PATH")
    options = BookletOptions(custom_fields=("track", "type", "board_number"))
    # Through JSON text, as an export arrives: "\ud800" is an escape there.
    odt = render_booklet(read_export(json.dumps(printed_export())), options)
    try:
        pdf_bytes = odt_to_pdf(odt, timeout=300)
    except PdfError as exc:
        pytest.fail(str(exc))
    pdf = tmp_path_factory.mktemp("printed") / "booklet.pdf"
    pdf.write_bytes(pdf_bytes)
    info = subprocess.run(["pdfinfo", str(pdf)], check=True, capture_output=True, timeout=60)
    count = int(re.search(rb"Pages:\s+(\d+)", info.stdout).group(1))
    return Printed([_pdftotext(pdf, n) for n in range(1, count + 1)], odt)


_ENTRY = re.compile(r"^\s*(?P<text>\S.*?)\s*\.{3,}\s*(?P<page>\d+)\s*$")


def _contents(printed: Printed) -> tuple[list[tuple[str, int]], int]:
    """(entry text, page number) of every contents line, from the contents' own pages; and
    the number of the first page after the contents."""
    entries = []
    after = 2
    for raw in printed.pages[1:]:
        if "Chair:" in raw:
            break
        after += 1
        for line in raw.splitlines():
            found = _ENTRY.match(line)
            if found:
                entries.append((found["text"], int(found["page"])))
    return entries, after


def test_each_contents_entry_names_the_page_its_heading_is_on(printed: Printed) -> None:
    entries, first_body_page = _contents(printed)
    texts = [text for text, _ in entries]
    assert "THU1 Thursday talk A" in texts and "Author index" in texts, texts
    assert any(t.startswith("MOA00 Session MOA00 — 09:00") for t in texts), texts
    assert len(entries) >= 16 + 4 + 3 + 4, texts  # contributions, sessions, days, more
    for text, page in entries:
        heading = text.split(" — ")[0]  # a session's entry adds its time range
        assert heading in printed.page(page), (text, page, printed.page(page)[:300])
        if page > first_body_page:  # and not on the page before (a heading at its foot)
            assert heading not in printed.page(page - 1).replace("....", ""), (text, page)


def test_every_page_but_the_title_page_has_a_footer_with_its_number(printed: Printed) -> None:
    assert len(printed.pages) > 5
    assert f"{TITLE} · 1" not in printed.page(1)
    for number in range(2, len(printed.pages) + 1):
        assert printed.page(number).endswith(f"{TITLE} · {number}"), (
            number, printed.page(number)[-200:])


def test_friday_session_comes_after_thursday_talks_and_days_are_in_order(
        printed: Printed) -> None:
    body = printed.body()
    order = ["Monday 2026-05-11", "MOB01 Session MOB01", "Thursday 2026-05-14",
             "THU1 Thursday talk A", "THU2 Thursday talk B", "Friday 2026-05-15",
             "MOA00 Session MOA00", "Unscheduled contributions", "ZU01 Unscheduled idea one",
             "ZU02 Unscheduled idea two", "Author index"]
    positions = [body.index(text) for text in order]
    assert positions == sorted(positions), list(zip(order, positions, strict=True))
    # A time line outside a session carries its day (14:00 Rome is 12:00 UTC).
    assert "THU1 Thursday talk A Thursday 2026-05-14, 14:00–14:20" in body


def test_unscheduled_contributions_are_under_their_own_heading(printed: Printed) -> None:
    body = printed.body()
    heading = body.index("Unscheduled contributions")
    for code in ("ZU01", "ZU02"):
        assert body.index(code) > heading
    between = body[heading:body.index("Author index")]
    assert "Sometime." in between and "Later." in between
    assert "Chair:" not in between


def test_an_html_and_markdown_abstract_prints_its_words_and_no_markup(printed: Printed) -> None:
    body = printed.body()
    block = body[body.index("THU1 Thursday talk A"):body.index("THU2 Thursday talk B")]
    for words in ("Our bold claim & gentle result.", "Method", "We used strong magnets and "
                  "fine tuning:", "• first item", "• second item", "Line one line two"):
        assert words in block, (words, block)
    for marker in ("<", ">", "**", "#", "&amp;", "steal", "color", "]("):
        assert marker not in block, (marker, block)


def test_forbidden_characters_are_gone_from_every_field(printed: Printed) -> None:
    body = printed.body()
    assert "\ufffd" not in printed.text
    for shown in ("track: Beam dynamics", "type: Oral", "board_number: B7",
                  "Zoë Quantum (Institut X)"):
        assert shown in body, shown
    # The ODT is well-formed XML 1.0 (what LibreOffice needs to open it at all).
    import io
    import zipfile
    from xml.etree import ElementTree

    with zipfile.ZipFile(io.BytesIO(printed.odt)) as archive:
        content = archive.read("content.xml").decode()
    ElementTree.fromstring(content)
    assert not re.search("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]", content)


def test_the_author_index_names_each_author_with_affiliation_and_codes(
        printed: Printed) -> None:
    body = printed.body()
    index = body[body.index("Author index"):]
    assert "Quantum, Zoë (Institut X) — THU1, THU2" in index
    assert "Nowhen, Ada (ESS) — ZU01" in index
    export = printed_export()
    session = export["results"][0]["sessions"][0]
    author = session["contributions"][0]["primaryauthors"][0]
    assert f"{author['last_name']}, {author['first_name']} ({author['affiliation']})" in index
    names = re.findall(r"(\w+\d*), \w+ \(", index)
    assert names == sorted(names, key=str.casefold), names[:20]
