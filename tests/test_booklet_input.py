"""The Indico export models: what they accept, and the one message each bad input gets."""

from __future__ import annotations

import copy
import functools
import json
import threading
from datetime import datetime
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from zoneinfo import ZoneInfo

import pytest

from opsflow.booklet.indico import BookletInputError, event_sessions, read_export
from opsflow.booklet.options import BookletOptions, BookletOptionsError
from opsflow.booklet.sample import generate_export


@pytest.fixture
def export() -> dict:
    return generate_export(sessions=3, contributions=9, authors=3, abstract_chars=120, loose=2)


def test_a_sessions_export_gives_sessions_in_order_and_loose_contributions(export: dict) -> None:
    export["results"][0]["unknown_field"] = {"anything": [1, 2]}
    event = read_export(export)
    sessions, loose = event_sessions(event)
    assert event.title == "International Particle Accelerator Conference"
    assert event.zone == ZoneInfo("Europe/Rome")
    assert [s.label for s in sessions] == ["MOA00", "MOB01", "MOC02"]
    assert [s.start for s in sessions] == sorted(s.start for s in sessions)
    assert sessions[0].conveners[0].affiliation
    assert [c.title for c in loose] == ["Public lecture 1", "Public lecture 2"]
    first = sessions[0].contributions[0]
    assert first.speakers and first.primaryauthors and first.coauthors
    assert first.start.tzinfo == ZoneInfo("UTC")  # kept as given; shown in the event's zone


def test_a_contributions_export_is_grouped_by_session_title() -> None:
    when = {"date": "2026-05-11", "time": "10:00:00", "tz": "UTC"}
    export = {"count": 1, "results": [{"title": "Workshop", "timezone": "UTC", "contributions": [
        {"title": "B talk", "session": "Beams", "startDate": {**when, "time": "11:00:00"}},
        {"title": "A talk", "session": "Beams", "startDate": when},
        {"title": "Keynote", "session": None, "startDate": {**when, "time": "08:00:00"}},
        {"title": "Poster-less", "session": "Optics", "startDate": None},
    ]}]}
    sessions, loose = event_sessions(read_export(export))
    assert [s.title for s in sessions] == ["Beams", "Optics"]
    assert sessions[0].start == datetime(2026, 5, 11, 10, tzinfo=ZoneInfo("UTC"))
    assert [c.title for c in loose] == ["Keynote"]


def test_missing_optional_fields_and_nulls_are_fine() -> None:
    event = read_export({"results": [{"title": "Bare", "contributions": [
        {"title": "Only a title", "speakers": None, "description": None, "startDate": "",
         "code": 17}]}]})
    contribution = event.contributions[0]
    assert (contribution.label, contribution.description, contribution.speakers) == ("17", "", [])
    assert contribution.start is None


def test_a_file_path_and_json_text_are_read(tmp_path, export: dict) -> None:
    path = tmp_path / "event.json"
    path.write_text(json.dumps(export))
    assert read_export(str(path)).title == read_export(path.as_uri()).title
    assert read_export(json.dumps(export)).title == "International Particle Accelerator Conference"


def test_an_export_is_fetched_from_a_url(tmp_path, export: dict) -> None:
    (tmp_path / "event.json").write_text(json.dumps(export))
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert read_export(f"{base}/event.json").title.startswith("International")
        with pytest.raises(BookletInputError, match=rf"^event: cannot read {base}/gone.json: .*404"):
            read_export(f"{base}/gone.json")
    finally:
        server.shutdown()
        server.server_close()


def _break(export: dict, how: str) -> object:
    broken = copy.deepcopy(export)
    event = broken["results"][0]
    if how == "no title":
        del event["sessions"][1]["contributions"][2]["title"]
    elif how == "blank title":
        event["contributions"][0]["title"] = "   "
    elif how == "bad date":
        event["sessions"][0]["contributions"][0]["startDate"]["date"] = "2026-02-30"
    elif how == "bad time":
        event["sessions"][2]["startDate"]["time"] = "25:61"
    elif how == "bad zone":
        event["timezone"] = "Mars/Olympus"
    elif how == "not an event":
        event["_type"] = "Category"
    elif how == "no results":
        broken = {"count": 0, "results": []}
    elif how == "no envelope":
        broken = {"title": "x"}
    elif how == "a list":
        broken = json.dumps([1, 2])
    elif how == "not json":
        broken = '{"count": 1, "results": [}'
    return broken


@pytest.mark.parametrize(("how", "message"), [
    ("no title", "results[0].sessions[1].contributions[2].title: missing"),
    ("blank title", "results[0].contributions[0].title: empty"),
    ("bad date", "results[0].sessions[0].contributions[0].startDate: unparsable date "
                 "'2026-02-30'"),
    ("bad time", "results[0].sessions[2].startDate: unparsable time '25:61'"),
    ("bad zone", "results[0].timezone: unknown time zone 'Mars/Olympus'"),
    ("not an event", "results[0]._type: 'Category' is not an event (expected 'Conference')"),
    ("no results", "results: no event in the export"),
    ("no envelope", "results: missing (not an Indico event export)"),
    ("a list", "event: not an Indico event export (a JSON list, expected an object with "
               "'results')"),
    ("not json", "event: not JSON (line 1 column 26: Expecting value)"),
])
def test_each_bad_input_gives_one_message_naming_the_field(export: dict, how: str,
                                                           message: str) -> None:
    with pytest.raises(BookletInputError) as caught:
        read_export(_break(export, how))
    assert str(caught.value) == message


def test_an_unreadable_file_is_named(tmp_path) -> None:
    with pytest.raises(BookletInputError, match=r"^event: cannot read .*nowhere.json"):
        read_export(str(tmp_path / "nowhere.json"))
    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(b"\xff\xfe not json")
    with pytest.raises(BookletInputError, match=r"^event: .*garbage.json is not JSON"):
        read_export(str(garbage))


@pytest.mark.parametrize(("options", "message"), [
    ({"language": "xx"}, "language: 'xx' is not one of de, en, fr, it"),
    ({"session_heading": "{code} {room}"}, "session_heading: unknown placeholder {room}"),
    ({"contribution_heading": "{code"}, "contribution_heading: "),
])
def test_bad_options_are_named(options: dict, message: str) -> None:
    with pytest.raises(BookletOptionsError) as caught:
        BookletOptions(**options)
    assert str(caught.value).startswith(message)
