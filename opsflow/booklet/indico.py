"""The Indico HTTP export of one event (`/export/event/ID.json?detail=sessions|contributions`).

Only what the booklet uses is modelled; every other field is ignored, and optional fields may
be missing or null. Bad input fails with ONE message that names the field path, e.g.
`results[0].contributions[12].title: missing`, so an organiser can find it in the export.

With `detail=sessions` the event lists session *blocks* (`sessions`, each with the session's
metadata nested under `session`) and, in `contributions`, only the contributions outside any
session. With `detail=contributions` there are no sessions: every contribution is in the
event's `contributions` and names its session by title; `event_sessions` groups those.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime, time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlparse
from urllib.request import url2pathname
from zoneinfo import ZoneInfo

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from opsflow.timezones import zone


class BookletInputError(ValueError):
    """The export cannot make a booklet; the message is one line naming the field path."""


def _none_as_empty(value: Any) -> Any:
    return [] if value is None else value


def _blank_as_none(value: Any) -> Any:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return value


# XML 1.0 cannot carry these: C0 controls but tab, newline and return, lone surrogates (JSON
# escapes like "\\ud800" make them), U+FFFE and U+FFFF. An export may hold any (pasted text).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def clean(text: str) -> str:
    """`text` without the characters XML 1.0 forbids (odfpy would write them, LibreOffice would
    show U+FFFD or refuse the file)."""
    return _NOT_XML.sub("", text)


def _as_text(value: Any) -> Any:
    """Indico gives ids and codes as numbers or strings; keep them as text, cleaned."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return str(value)
    return clean(value) if isinstance(value, str) else value


def _clean_list(value: Any) -> Any:
    if value is None:
        return []
    if isinstance(value, list):
        return [clean(v) if isinstance(v, str) else v for v in value]
    return value


def parse_indico_date(value: Any) -> datetime | None:
    """`{date, time, tz}` -> a datetime (naive when the export gives no tz); '' or null -> None."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"not a date: {value!r} (expected {{date, time, tz}})")
    raw_date, raw_time, raw_tz = value.get("date"), value.get("time") or "00:00:00", value.get("tz")
    if not raw_date:
        raise ValueError("date: missing")
    try:
        day = date.fromisoformat(str(raw_date))
    except ValueError:
        raise ValueError(f"unparsable date {raw_date!r}") from None
    try:
        clock = time.fromisoformat(str(raw_time))
    except ValueError:
        raise ValueError(f"unparsable time {raw_time!r}") from None
    moment = datetime.combine(day, clock)
    if raw_tz:
        moment = moment.replace(tzinfo=zone(str(raw_tz)))
    return moment


Text = Annotated[str | None, BeforeValidator(_blank_as_none), BeforeValidator(_as_text)]
def _not_blank(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("empty")
    return value


Title = Annotated[str, BeforeValidator(_as_text), AfterValidator(_not_blank)]
Moment = Annotated[datetime | None, BeforeValidator(parse_indico_date)]


class _Indico(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Person(_Indico):
    first_name: Text = None
    last_name: Text = None
    full_name: Text = Field(default=None, alias="fullName")
    affiliation: Text = None

    @property
    def name(self) -> str:
        parts = [p for p in (self.first_name, self.last_name) if p]
        return " ".join(parts) if parts else (self.full_name or "")

    @property
    def key(self) -> tuple[str, str]:
        """Who this is, to find a speaker among the authors (same name, same affiliation)."""
        return (self.name.casefold(), (self.affiliation or "").casefold())


People = Annotated[list[Person], BeforeValidator(_none_as_empty)]


class Contribution(_Indico):
    id: Text = None
    friendly_id: Text = None
    code: Text = None
    title: Title
    description: str = ""
    start: Moment = Field(default=None, alias="startDate")
    duration: float | None = None  # minutes
    session: Text = None  # the session's title (detail=contributions)
    track: Text = None
    type: Text = None
    board_number: Text = None
    keywords: Annotated[list[str], BeforeValidator(_clean_list)] = []
    speakers: People = []
    primaryauthors: People = []
    coauthors: People = []
    custom_fields: dict[str, str] = {}

    @field_validator("description", mode="before")
    @classmethod
    def _no_description(cls, value: Any) -> Any:
        return "" if value is None else clean(value) if isinstance(value, str) else value

    @field_validator("custom_fields", mode="before")
    @classmethod
    def _fields_by_name(cls, value: Any) -> Any:
        """Accept `{name: value}` or Indico's list of `{name|title, value}`."""
        if value is None:
            return {}
        if isinstance(value, list):
            pairs = {}
            for item in value:
                if isinstance(item, dict):
                    name = item.get("name") or item.get("title")
                    if name:
                        pairs[clean(str(name))] = ("" if item.get("value") is None
                                                   else clean(str(item["value"])))
            return pairs
        if isinstance(value, dict):
            return {clean(str(k)): "" if v is None else clean(str(v)) for k, v in value.items()}
        return value

    @property
    def label(self) -> str:
        """The code shown in the booklet: the programme code, else Indico's number."""
        return self.code or self.friendly_id or self.id or ""

    @property
    def sort_key(self) -> tuple:
        return _order(self.start, self.label, self.title)


Contributions = Annotated[list[Contribution], BeforeValidator(_none_as_empty)]


class SessionInfo(_Indico):
    """The session a block belongs to (`detail=sessions` nests it under `session`)."""

    title: Text = None
    code: Text = None
    start: Moment = Field(default=None, alias="startDate")
    is_poster: bool | None = Field(default=None, alias="isPoster")
    session_conveners: People = Field(default=[], alias="sessionConveners")


class Session(_Indico):
    """A session block of the timetable (or a whole session in a flat export)."""

    title: Title
    code: Text = None
    start: Moment = Field(default=None, alias="startDate")
    end: Moment = Field(default=None, alias="endDate")
    is_poster: bool | None = Field(default=None, alias="isPoster")
    session_conveners: People = Field(default=[], alias="sessionConveners")
    block_conveners: People = Field(default=[], alias="conveners")
    contributions: Contributions = []
    info: SessionInfo | None = Field(default=None, alias="session")

    @property
    def label(self) -> str:
        return self.code or (self.info.code if self.info else None) or ""

    @property
    def poster(self) -> bool:
        return bool(self.is_poster or (self.info and self.info.is_poster))

    @property
    def conveners(self) -> list[Person]:
        if self.block_conveners:
            return self.block_conveners
        if self.session_conveners:
            return self.session_conveners
        return self.info.session_conveners if self.info else []

    @property
    def sort_key(self) -> tuple:
        return _order(self.start, self.label, self.title)


class Event(_Indico):
    type_: str | None = Field(default=None, alias="_type")
    title: Title
    start: Moment = Field(default=None, alias="startDate")
    end: Moment = Field(default=None, alias="endDate")
    timezone: Text = None
    location: Text = None
    contributions: Contributions = []
    sessions: Annotated[list[Session], BeforeValidator(_none_as_empty)] = []

    @field_validator("type_")
    @classmethod
    def _an_event(cls, value: str | None) -> str | None:
        if value is not None and value != "Conference":
            raise ValueError(f"{value!r} is not an event (expected 'Conference')")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            zone(value)
        return value

    @property
    def zone(self) -> ZoneInfo:
        """The event's time zone: every time in the booklet is shown in it."""
        if self.timezone:
            return zone(self.timezone)
        if self.start is not None and isinstance(self.start.tzinfo, ZoneInfo):
            return self.start.tzinfo
        return ZoneInfo("UTC")


class Export(_Indico):
    count: int | None = None
    results: list[Event] = Field(min_length=1, max_length=1)


def _order(start: datetime | None, code: str, title: str) -> tuple:
    """Order by start (unscheduled last), then code, then title."""
    when = start.timestamp() if start is not None and start.tzinfo else (
        start.replace(tzinfo=ZoneInfo("UTC")).timestamp() if start is not None else float("inf"))
    return (when, code, title)


# --- reading and validating ------------------------------------------------------------------

def _path_of(loc: tuple) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += ("." if path else "") + str(part)
    return path or "event"


def _message(error: dict) -> str:
    kind = error["type"]
    if kind == "missing":
        return "missing"
    if kind == "too_short" and error["loc"] == ("results",):
        return "no event in the export"
    if kind in ("string_too_short", "too_short"):
        return "empty"
    if kind == "too_long" and error["loc"] == ("results",):
        return "more than one event in the export; export one event"
    message = error["msg"].removeprefix("Value error, ")
    if kind.endswith("_type") or kind in {"model_type", "list_type", "dict_type"}:
        message += f", got {type(error.get('input')).__name__}"
    return message


def validate_export(data: Any) -> Event:
    """The event of an Indico export already parsed from JSON."""
    if not isinstance(data, dict):
        raise BookletInputError(
            f"event: not an Indico event export (a JSON {type(data).__name__}, expected an "
            "object with 'results')")
    if "results" not in data:
        raise BookletInputError("results: missing (not an Indico event export)")
    try:
        return Export.model_validate(data).results[0]
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise BookletInputError(f"{_path_of(first['loc'])}: {_message(first)}") from None


def read_export(source: dict | str | Path | bytes, token: str | None = None) -> Event:
    """The event from an export given as a dict, JSON text, a file path, a file:// URL, or an
    http(s) URL: Indico's own export URL (`https://indico.example.org/export/event/ID.json?
    detail=sessions`), fetched with `token` (an Indico API token) as a Bearer credential, or
    any server holding the file. The token is sent, never shown in a message."""
    if isinstance(source, dict):
        return validate_export(source)
    if isinstance(source, bytes):
        return validate_export(_json(source, "event"))
    text = str(source)
    if isinstance(source, str) and text.lstrip().startswith(("{", "[")):
        return validate_export(_json(text, "event"))
    url = urlparse(text)
    if url.scheme in ("http", "https"):
        import httpx

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            response = httpx.get(text, follow_redirects=True, timeout=300, headers=headers)
        except httpx.HTTPError as exc:
            raise BookletInputError(f"event: cannot read {text}: {exc}") from None
        if response.status_code in (401, 403):
            raise BookletInputError(
                f"event: {text} refused the export ({response.status_code}): "
                + ("the Indico API token was not accepted" if token else
                   "it needs an Indico API token (indico_token: a Secret block's name)"))
        if response.is_error:
            raise BookletInputError(f"event: cannot read {text}: HTTP {response.status_code} "
                                    f"{response.reason_phrase}")
        return validate_export(_json(response.content, text))
    path = Path(url2pathname(url.path)) if url.scheme == "file" else Path(text)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BookletInputError(f"event: cannot read {path}: {exc.strerror or exc}") from None
    return validate_export(_json(raw, str(path)))


def _json(raw: str | bytes, where: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        detail = f"line {exc.lineno} column {exc.colno}: {exc.msg}" if isinstance(
            exc, json.JSONDecodeError) else str(exc)
        what = "event: not JSON" if where == "event" else f"event: {where} is not JSON"
        raise BookletInputError(f"{what} ({detail})") from None


def event_sessions(event: Event) -> tuple[list[Session], list[Contribution]]:
    """The sessions in booklet order, and the contributions outside any session.

    A flat (`detail=contributions`) export names each contribution's session by title: those
    are gathered into one session per title, starting with its first contribution.
    """
    sessions = list(event.sessions)
    loose: list[Contribution] = []
    by_title: dict[str, list[Contribution]] = {}
    for contribution in event.contributions:
        if contribution.session and not event.sessions:
            by_title.setdefault(contribution.session, []).append(contribution)
        else:
            loose.append(contribution)
    for title, members in by_title.items():
        starts = [c.start for c in members if c.start is not None]
        sessions.append(Session.model_construct(
            title=title, code=None, start=min(starts, key=_moment_key) if starts else None,
            end=None, is_poster=None, session_conveners=[], block_conveners=[],
            contributions=members, info=None))
    sessions.sort(key=lambda s: s.sort_key)
    loose.sort(key=lambda c: c.sort_key)
    return sessions, loose


def _moment_key(moment: datetime) -> float:
    return _order(moment, "", "")[0]
