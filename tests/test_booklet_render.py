"""The booklet ODT: its structure and named styles, and what LibreOffice makes of it."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path
from xml.etree import ElementTree

import pytest

from opsflow.booklet.indico import event_sessions, read_export
from opsflow.booklet.options import BookletOptions
from opsflow.booklet.render import PARAGRAPH_STYLES, render_booklet
from opsflow.booklet.sample import generate_export

TEXT = "{urn:oasis:names:tc:opendocument:xmlns:text:1.0}"
STYLE = "{urn:oasis:names:tc:opendocument:xmlns:style:1.0}"


@pytest.fixture(scope="module")
def export() -> dict:
    # Three sessions (the third a poster session) and one lecture outside any session.
    return generate_export(sessions=3, contributions=9, authors=4, abstract_chars=150,
                           poster_every=3, loose=1)


def _xml(odt: bytes, member: str) -> ElementTree.Element:
    with zipfile.ZipFile(io.BytesIO(odt)) as archive:
        return ElementTree.fromstring(archive.read(member))


def test_named_styles_headings_and_author_marks(export: dict) -> None:
    event = read_export(export)
    odt = render_booklet(event)
    styles = _xml(odt, "styles.xml")
    named = {s.get(f"{STYLE}display-name") for s in styles.iter(f"{STYLE}style")}
    assert set(PARAGRAPH_STYLES) | {"Speaker", "Co-author"} <= named
    content = _xml(odt, "content.xml")
    headings = [(h.get(f"{TEXT}outline-level"), "".join(h.itertext()))
                for h in content.iter(f"{TEXT}h")]
    # Days, then the sessions and the contributions outside sessions of each day.
    assert [t for level, t in headings if level == "1"] == [
        "Monday 2026-05-11", "Saturday 2026-05-16", "Author index"]
    assert [t for level, t in headings if level == "2"] == [
        "MOA00 Session MOA00", "MOB01 Session MOB01", "MPC02 Session MPC02",
        f"{event.contributions[0].label} Public lecture 1"]
    # Every paragraph uses a named style, none an automatic one.
    used = {p.get(f"{TEXT}style-name") for p in content.iter() if p.tag in (f"{TEXT}p",
                                                                            f"{TEXT}h")}
    assert used <= {name.replace(" ", "_20_") for name in PARAGRAPH_STYLES}
    contribution = event.sessions[0].contributions[0]
    spans = {"".join(s.itertext()): s.get(f"{TEXT}style-name") for s in content.iter(f"{TEXT}span")}
    assert spans[contribution.speakers[0].name] == "Speaker"
    assert spans[contribution.coauthors[-1].name] == "Co-author"
    # A primary author who does not speak is plain text, with the affiliation after the group.
    plain = contribution.primaryauthors[1]
    authors = [p for p in content.iter(f"{TEXT}p") if plain.name in "".join(p.itertext())][0]
    assert plain.name not in spans
    assert f"({plain.affiliation})" in "".join(authors.itertext())


def test_options_change_title_headings_language_and_custom_fields(export: dict) -> None:
    options = BookletOptions(title="IPAC'26 Abstracts", session_heading="{title} [{code}]",
                             contribution_heading="{code} · {start} · {title}", language="it",
                             custom_fields=("track", "board_number"))
    content = _xml(render_booklet(read_export(export), options), "content.xml")
    text = [" ".join("".join(p.itertext()).split()) for p in content.iter()
            if p.tag in (f"{TEXT}p", f"{TEXT}h")]
    assert text[0] == "IPAC'26 Abstracts"
    assert "Indice" in text and "Indice degli autori" in text and "lunedì 2026-05-11" in text
    assert "Session MOA00 [MOA00]" in text
    assert any(t.startswith("MOA0001 · 09:00 · ") for t in text)
    assert "track: Beam dynamics" in text
    assert "board_number: B1" in text  # poster sessions have board numbers
    assert any(t.startswith("Presidenza: ") for t in text)


def _pdf_text(odt: bytes, workdir: Path) -> str:
    soffice, pdftotext = shutil.which("soffice"), shutil.which("pdftotext")
    if not soffice or not pdftotext:
        message = "LibreOffice (libreoffice-writer) or pdftotext (poppler-utils) is missing"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    source = workdir / "booklet.odt"
    source.write_bytes(odt)
    profile = (workdir / "lo-profile").as_uri()  # its own profile: other sofficees may run
    subprocess.run([soffice, f"-env:UserInstallation={profile}", "--headless",
                    "--convert-to", "pdf", "--outdir", str(workdir), str(source)],
                   check=True, capture_output=True, timeout=240)
    pdf = workdir / "booklet.pdf"
    assert pdf.stat().st_size > 0
    done = subprocess.run([pdftotext, str(pdf), "-"], check=True, capture_output=True,
                          timeout=60)
    return " ".join(done.stdout.decode().split())


def test_libreoffice_converts_the_booklet_to_a_pdf_in_order(export: dict, tmp_path: Path) -> None:
    event = read_export(export)
    text = _pdf_text(render_booklet(event), tmp_path)

    contents = text.index("Contents")
    sessions = ["MOA00 Session MOA00", "MOB01 Session MOB01", "MPC02 Session MPC02"]
    # The contents list the sessions in order, then Saturday's lecture outside sessions...
    toc = [text.index(s, contents) for s in sessions] + [
        text.index("Saturday 2026-05-16", contents)]
    assert toc == sorted(toc)
    # ...and the pages follow them, in the same order, each session's contributions by start.
    after_toc = text.index("Author index", contents) + 1
    pages = [text.index(s, after_toc) for s in sessions]
    outside = text.index("Saturday 2026-05-16", after_toc)
    assert pages == sorted(pages) and pages[-1] < outside
    for session, start in zip(event_sessions(event)[0], pages, strict=True):
        codes = sorted(c.code for c in session.contributions)
        positions = [text.index(code, start) for code in codes]
        assert positions == sorted(positions), session.code
        for contribution in session.contributions:
            assert contribution.speakers[0].name in text
    assert text.index("Public lecture 1", outside) > outside
    # Times are in the event's zone (the export gives them in UTC): 09:00 Rome, not 07:00.
    assert "Monday 2026-05-11, 09:00–10:30 (Europe/Rome)" in text
    assert re.search(r"MOA0001 .*? 09:00–09:20", text)


def test_title_page_first_and_poster_contributions_in_compact_form(export: dict) -> None:
    event = read_export(export)
    content = _xml(render_booklet(event), "content.xml")
    body = content.find(".//{urn:oasis:names:tc:opendocument:xmlns:office:1.0}text")
    assert body is not None
    paragraphs = [(p.get(f"{TEXT}style-name"), "".join(p.itertext()))
                  for p in body if p.tag in (f"{TEXT}p", f"{TEXT}h")]
    # The title page opens the booklet: the event's title, then its dates.
    (first_style, first_text), (second_style, second_text) = paragraphs[:2]
    assert (first_style, first_text) == ("Booklet_20_Title", event.title)
    assert second_style == "Booklet_20_Subtitle" and str(event.start.year) in second_text
    # Poster contributions: a paragraph title, no heading, no time line of their own.
    posters = [c for s in event.sessions if s.poster for c in s.contributions]
    lectures = [c for s in event.sessions if not s.poster for c in s.contributions]
    assert posters and lectures
    headings = {text for style, text in paragraphs if style == "Contribution_20_Heading"}
    poster_titles = {text for style, text in paragraphs if style == "Poster_20_Title"}
    for contribution in posters:
        assert any(contribution.title in t for t in poster_titles)
        assert not any(contribution.title in t for t in headings)
    for contribution in lectures:
        assert any(contribution.title in t for t in headings)
    styles_after_posters = {style for style, _ in paragraphs} & {"Poster_20_Authors",
                                                                  "Poster_20_Abstract"}
    assert styles_after_posters == {"Poster_20_Authors", "Poster_20_Abstract"}
