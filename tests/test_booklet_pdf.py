"""The booklet as LibreOffice prints it, checked where the render test is loose: an export whose
code order and time order disagree (and that has ties), so that "in order of start, then code"
is really what decides; every contribution inside its own session's part; each speaker and
convener inside the block they belong to; and a table of contents ahead of the pages."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import pytest

from opsflow.booklet.indico import event_sessions, read_export
from opsflow.booklet.render import render_booklet
from opsflow.booklet.sample import generate_export
from tests.test_booklet_render import _pdf_text


def _at(hour: int, minute: int = 0, day: int = 11) -> dict[str, str]:
    return {"date": f"2026-05-{day:02d}", "time": f"{hour:02d}:{minute:02d}:00", "tz": "UTC"}


def _tangled_export() -> dict:
    """Sessions and contributions whose codes run against their times, with ties."""
    export = copy.deepcopy(generate_export(sessions=3, contributions=9, authors=4,
                                           abstract_chars=120, poster_every=0, loose=2))
    event = export["results"][0]
    sessions = {s["session"]["code"]: s for s in event["sessions"]}
    assert set(sessions) == {"MOA00", "MOB01", "MOC02"}
    # MOC02 starts first; MOA00 and MOB01 start together, so their codes decide.
    sessions["MOC02"]["startDate"] = _at(6)
    sessions["MOA00"]["startDate"] = sessions["MOB01"]["startDate"] = _at(9)
    for code, session in sessions.items():
        contributions = {c["code"]: c for c in session["contributions"]}
        first, second, third = (f"{code}{i:02d}" for i in (1, 2, 3))
        base = {"MOC02": 6, "MOA00": 9, "MOB01": 9}[code]
        # the third starts first; the first and second tie, and their codes decide
        contributions[third]["startDate"] = _at(base, 0)
        contributions[first]["startDate"] = contributions[second]["startDate"] = _at(base, 40)
    lectures = {c["title"]: c for c in event["contributions"]}
    lectures["Public lecture 2"]["startDate"] = _at(7, day=16)
    lectures["Public lecture 1"]["startDate"] = _at(8, day=16)
    return export


SESSION_ORDER = ["MOC02", "MOA00", "MOB01"]


@pytest.fixture(scope="module")
def booklet(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    export = _tangled_export()
    text = _pdf_text(render_booklet(read_export(export)), tmp_path_factory.mktemp("pdf"))
    return export, text


def _heading(code: str) -> str:
    return f"{code} Session {code}"


def test_the_table_of_contents_comes_first_in_session_order(booklet: tuple[dict, str]) -> None:
    _, text = booklet
    contents = text.index("Contents")
    first_page = text.index("Chair:")  # the first session page starts with its chair line
    toc = text[contents:first_page]
    positions = [toc.index(_heading(code)) for code in SESSION_ORDER]
    assert positions == sorted(positions), toc
    assert toc.index("Saturday 2026-05-16") > positions[-1]  # the lectures' day
    # under its day, each entry gives its session's time range in the event's zone
    assert toc.index("Monday 2026-05-11") < positions[0]
    assert "MOC02 Session MOC02 — 08:00–" in toc  # 06:00 UTC in Rome


def _pages(text: str) -> dict[str, str]:
    """Each session's part of the booklet (after the contents), and the loose part."""
    body_start = text.index("Chair:")
    starts = [(text.rindex(_heading(code), 0, body_start) if i == 0 else
               text.index(_heading(code), body_start), code)
              for i, code in enumerate(SESSION_ORDER)]
    outside = text.index("Saturday 2026-05-16", body_start)  # the lectures' day
    assert [s for s, _ in starts] == sorted(s for s, _ in starts) and starts[-1][0] < outside
    bounds = [*(s for s, _ in starts), outside, len(text)]
    parts = {code: text[bounds[i]:bounds[i + 1]] for i, (_, code) in enumerate(starts)}
    parts["outside"] = text[outside:]
    return parts


def test_contributions_sit_in_their_session_by_start_then_code(
        booklet: tuple[dict, str]) -> None:
    export, text = booklet
    parts = _pages(text)
    for code in SESSION_ORDER:
        expected = [f"{code}03", f"{code}01", f"{code}02"]  # 03 first; 01 and 02 tie on time
        part = parts[code]
        positions = [part.index(c) for c in expected]
        assert positions == sorted(positions), (code, part[:400])
        for other in SESSION_ORDER:
            if other != code:
                assert f"{other}01" not in part, (code, other)
    loose = parts["outside"]
    assert loose.index("Public lecture 2") < loose.index("Public lecture 1")


def test_speakers_and_conveners_are_inside_their_own_block(booklet: tuple[dict, str]) -> None:
    export, text = booklet
    parts = _pages(text)
    for session in export["results"][0]["sessions"]:
        code = session["session"]["code"]
        part = parts[code]
        convener = session["conveners"][0]
        assert f"Chair: {convener['fullName']} ({convener['affiliation']})" in part
        order = [f"{code}03", f"{code}01", f"{code}02"]
        starts = [part.index(c) for c in order] + [len(part)]
        blocks = {c: part[starts[i]:starts[i + 1]] for i, c in enumerate(order)}
        for contribution in session["contributions"]:
            own = blocks[contribution["code"]]
            for speaker in contribution["speakers"]:
                assert speaker["fullName"] in own, (contribution["code"], speaker["fullName"])
            for other_code, block in blocks.items():
                if other_code != contribution["code"]:
                    assert contribution["speakers"][0]["fullName"] not in block
    for lecture in export["results"][0]["contributions"]:
        assert lecture["speakers"][0]["fullName"] in parts["outside"]


def test_the_tangled_export_really_disagrees_with_code_order() -> None:
    """Guards the fixture: by code alone, the sessions would come out otherwise."""
    sessions, _ = event_sessions(read_export(_tangled_export()))
    assert sorted(SESSION_ORDER) != SESSION_ORDER
    assert [s.label for s in sessions] == SESSION_ORDER
    starts = {s.label: s.start for s in sessions}
    assert starts["MOC02"] == datetime(2026, 5, 11, 6, tzinfo=UTC)
    assert starts["MOC02"] < starts["MOA00"] == starts["MOB01"]
