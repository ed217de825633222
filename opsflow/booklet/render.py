"""The abstract booklet as an ODT document, built with odfpy (after JACoW MEOW's booklet).

Layout: a title page; a table of contents; a page per session (code, title, date and time
range in the event's time zone, conveners with affiliations) with its contributions in order
of start then code (code, title, time, authors grouped by affiliation with speakers in bold
and co-authors in italics, the abstract, chosen custom fields); poster sessions compact;
contributions outside any session in a part of their own.

Every paragraph uses a named (common) style, so a user restyles the whole booklet by editing
one style in LibreOffice. The table of contents is written out entry by entry, because
LibreOffice does not refresh an index when it converts a file; "Update index" in LibreOffice
rebuilds it from the headings, with page numbers.

odfpy's element building is the cost of rendering: this module computes each text once and
builds each element with one call, and nothing else per element.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from odf.opendocument import OpenDocumentText
from odf.style import ParagraphProperties, Style, TextProperties
from odf.text import (
    H,
    IndexBody,
    IndexEntryChapter,
    IndexEntryPageNumber,
    IndexEntryTabStop,
    IndexEntryText,
    IndexTitle,
    IndexTitleTemplate,
    P,
    Span,
    TableOfContent,
    TableOfContentEntryTemplate,
    TableOfContentSource,
)

from opsflow.booklet.indico import Contribution, Event, Session, event_sessions
from opsflow.booklet.options import BookletOptions, fill

Progress = Callable[[int, int], None]  # (contributions done, contributions in all)

# Display name -> (paragraph properties, text properties, outline level). The ODF name is the
# display name with spaces encoded as LibreOffice does ("Session Heading" -> Session_20_Heading).
PARAGRAPH_STYLES: dict[str, tuple[dict, dict, int | None]] = {
    "Booklet Title": ({"textalign": "center", "margintop": "6cm", "marginbottom": "0.8cm"},
                      {"fontsize": "26pt", "fontweight": "bold"}, None),
    "Booklet Subtitle": ({"textalign": "center", "breakafter": "page"}, {"fontsize": "14pt"}, None),
    "Contents Heading": ({"marginbottom": "0.4cm"}, {"fontsize": "16pt", "fontweight": "bold"},
                         None),
    "Contents 1": ({"marginbottom": "0.1cm"}, {"fontsize": "11pt"}, None),
    "Session Heading": ({"breakbefore": "page", "keepwithnext": "always", "marginbottom": "0.2cm"},
                        {"fontsize": "16pt", "fontweight": "bold"}, 1),
    "Session Time": ({"marginbottom": "0.1cm"}, {"fontsize": "11pt", "fontstyle": "italic"}, None),
    "Session Conveners": ({"marginbottom": "0.4cm"}, {"fontsize": "11pt"}, None),
    "Contribution Heading": ({"margintop": "0.5cm", "keepwithnext": "always"},
                             {"fontsize": "12pt", "fontweight": "bold"}, 2),
    "Contribution Time": ({"keepwithnext": "always"}, {"fontsize": "10pt"}, None),
    "Authors": ({"marginbottom": "0.15cm", "keepwithnext": "always"}, {"fontsize": "10pt"}, None),
    "Abstract": ({"textalign": "justify", "marginbottom": "0.1cm"}, {"fontsize": "10pt"}, None),
    "Custom Field": ({}, {"fontsize": "9pt"}, None),
    "Poster Title": ({"margintop": "0.25cm", "keepwithnext": "always"},
                     {"fontsize": "10pt", "fontweight": "bold"}, None),
    "Poster Authors": ({"keepwithnext": "always"}, {"fontsize": "9pt"}, None),
    "Poster Abstract": ({"textalign": "justify"}, {"fontsize": "9pt"}, None),
}
TEXT_STYLES: dict[str, dict] = {
    "Speaker": {"fontweight": "bold"},
    "Co-author": {"fontstyle": "italic"},
    "Custom Field Name": {"fontweight": "bold"},
}


def odf_name(display: str) -> str:
    return display.replace(" ", "_20_")


def add_booklet_styles(doc: OpenDocumentText) -> dict[str, Style]:
    """Add the booklet's named styles to `doc`; returns them by display name."""
    styles: dict[str, Style] = {}
    for display, (paragraph, text, level) in PARAGRAPH_STYLES.items():
        extra = {"defaultoutlinelevel": str(level)} if level else {}
        style = Style(name=odf_name(display), displayname=display, family="paragraph", **extra)
        if paragraph:
            style.addElement(ParagraphProperties(**paragraph))
        style.addElement(TextProperties(**text))
        doc.styles.addElement(style)
        styles[display] = style
    for display, text in TEXT_STYLES.items():
        style = Style(name=odf_name(display), displayname=display, family="text")
        style.addElement(TextProperties(**text))
        doc.styles.addElement(style)
        styles[display] = style
    return styles


# XML 1.0 cannot carry most control characters; an export may (pasted abstracts do).
_CONTROL = dict.fromkeys(c for c in range(32) if c not in (9, 10, 13))
_PARAGRAPHS = re.compile(r"\s*\n\s*")


def clean(text: str) -> str:
    return text.translate(_CONTROL)


def abstract_paragraphs(description: str) -> list[str]:
    text = clean(description).strip()
    if "\n" not in text:  # the usual abstract: one paragraph, no regex needed
        return [text] if text else []
    return _PARAGRAPHS.split(text)


def in_zone(moment: datetime, zone: ZoneInfo) -> datetime:
    """A time of the export in the event's zone (a time without zone is taken as the event's)."""
    return moment.replace(tzinfo=zone) if moment.tzinfo is None else moment.astimezone(zone)


def author_groups(contribution: Contribution) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """Authors grouped by affiliation, in order of first appearance: [(affiliation,
    [(name, text style or None)])]. Speakers are bold, co-authors italic; a speaker who is
    not among the authors is listed too. A person is the same name and affiliation."""
    speakers = {(p.name.casefold(), (p.affiliation or "").casefold())
                for p in contribution.speakers}
    groups: dict[str, list[tuple[str, str | None]]] = {}
    seen: set[tuple[str, str]] = set()
    for people, marker in ((contribution.primaryauthors, None),
                           (contribution.coauthors, "Co-author"),
                           (contribution.speakers, "Speaker")):
        for person in people:
            name = person.name
            affiliation = person.affiliation or ""
            key = (name.casefold(), affiliation.casefold())
            if not name or key in seen:
                continue
            seen.add(key)
            group = groups.get(affiliation)
            if group is None:
                group = groups[affiliation] = []
            group.append((name, "Speaker" if key in speakers else marker))
    # Names and affiliations are cleaned once per group, not once per use.
    return [(clean(affiliation), [(clean(n), style) for n, style in names])
            for affiliation, names in groups.items()]


class BookletRenderer:
    """Renders one event; one instance per booklet."""

    def __init__(self, event: Event, options: BookletOptions) -> None:
        self.event = event
        self.options = options
        self.texts = options.texts
        self.zone = event.zone
        self.weekdays = self.texts["weekdays"].split()
        self.doc = OpenDocumentText()
        self.styles = add_booklet_styles(self.doc)
        self.text = self.doc.text

    # -- formatting -----------------------------------------------------------------------

    def day(self, moment: datetime) -> str:
        local = in_zone(moment, self.zone)
        return f"{self.weekdays[local.weekday()]} {local:%Y-%m-%d}"

    def clock(self, moment: datetime | None) -> str:
        if moment is None:
            return ""
        local = in_zone(moment, self.zone)
        return f"{local.hour:02d}:{local.minute:02d}"

    def session_values(self, session: Session) -> dict[str, str]:
        return {"code": clean(session.label), "title": clean(session.title),
                "date": self.day(session.start) if session.start else "",
                "start": self.clock(session.start), "end": self.clock(session.end)}

    def session_time(self, session: Session) -> str:
        if session.start is None:
            return ""
        text = f"{self.day(session.start)}, {self.clock(session.start)}"
        if session.end is not None:
            text += f"–{self.clock(session.end)}"
        return f"{text} ({self.zone.key})"

    def contribution_values(self, contribution: Contribution) -> dict[str, str]:
        start, minutes = contribution.start, contribution.duration
        end = ""
        if start is not None and minutes:
            end = self.clock(start + timedelta(minutes=minutes))
        return {"code": clean(contribution.label), "title": clean(contribution.title),
                "start": self.clock(start), "end": end,
                "duration": f"{minutes:g}" if minutes else "", "track": contribution.track or "",
                "type": contribution.type or "", "board": contribution.board_number or ""}

    # -- building -------------------------------------------------------------------------

    def render(self, progress: Progress | None = None) -> bytes:
        """The booklet as ODT bytes."""
        sessions, loose = event_sessions(self.event)
        total = sum(len(s.contributions) for s in sessions) + len(loose)
        done, step = 0, max(1, total // 20)
        self.title_page()
        self.table_of_contents(sessions, loose)
        for session in sessions:
            self.session_page(session)
            poster = session.poster
            for contribution in sorted(session.contributions, key=_by_start):
                self.contribution(contribution, poster)
                done += 1
                if progress and done % step == 0:
                    progress(done, total)
        if loose:
            self.text.addElement(H(outlinelevel=1, stylename=self.styles["Session Heading"],
                                   text=self.texts["outside"]))
            for contribution in loose:
                self.contribution(contribution, False)
                done += 1
                if progress and done % step == 0:
                    progress(done, total)
        if progress:
            progress(total, total)
        out = io.BytesIO()
        self.doc.write(out)
        return out.getvalue()

    def title_page(self) -> None:
        event = self.event
        self.text.addElement(P(stylename=self.styles["Booklet Title"],
                               text=clean(self.options.title or event.title)))
        subtitle = clean(event.title) if self.options.title else ""
        if event.start is not None:
            dates = self.day(event.start)
            if event.end is not None and self.day(event.end) != dates:
                dates += f" – {self.day(event.end)}"
            subtitle = f"{subtitle} · {dates}" if subtitle else dates
        if event.location:
            subtitle += f" · {clean(event.location)}"
        self.text.addElement(P(stylename=self.styles["Booklet Subtitle"], text=subtitle))

    def table_of_contents(self, sessions: list[Session], loose: list[Contribution]) -> None:
        """The contents, with one entry per session written in (see the module docstring)."""
        title = self.texts["contents"]
        toc = TableOfContent(name="Contents", protected="false")
        source = TableOfContentSource(outlinelevel=1)
        template = IndexTitleTemplate(stylename=self.styles["Contents Heading"])
        template.addText(title)
        source.addElement(template)
        entry = TableOfContentEntryTemplate(outlinelevel=1, stylename=self.styles["Contents 1"])
        for part in (IndexEntryChapter(), IndexEntryText(),
                     IndexEntryTabStop(type="right", leaderchar="."), IndexEntryPageNumber()):
            entry.addElement(part)
        source.addElement(entry)
        toc.addElement(source)
        body = IndexBody()
        heading = IndexTitle(name="Contents_Head")
        heading.addElement(P(stylename=self.styles["Contents Heading"], text=title))
        body.addElement(heading)
        style = self.styles["Contents 1"]
        for session in sessions:
            line = fill(self.options.session_heading, self.session_values(session))
            when = self.session_time(session)
            body.addElement(P(stylename=style, text=f"{line} — {when}" if when else line))
        if loose:
            body.addElement(P(stylename=style, text=self.texts["outside"]))
        toc.addElement(body)
        self.text.addElement(toc)

    def session_page(self, session: Session) -> None:
        styles = self.styles
        heading = fill(self.options.session_heading, self.session_values(session))
        self.text.addElement(H(outlinelevel=1, stylename=styles["Session Heading"], text=heading))
        when = self.session_time(session)
        if session.poster:
            when = f"{self.texts['poster']} · {when}" if when else self.texts["poster"]
        if when:
            self.text.addElement(P(stylename=styles["Session Time"], text=when))
        if session.conveners:
            line = P(stylename=styles["Session Conveners"])
            self.people(line, [(p.affiliation and clean(p.affiliation) or "",
                                [(clean(p.name), None)]) for p in session.conveners if p.name],
                        prefix=f"{self.texts['conveners']}: ")
            self.text.addElement(line)

    def contribution(self, contribution: Contribution, poster: bool) -> None:
        styles, add = self.styles, self.text.addElement
        values = self.contribution_values(contribution)
        heading = fill(self.options.contribution_heading, values)
        if poster:
            add(P(stylename=styles["Poster Title"], text=heading))
            authors, abstract = styles["Poster Authors"], styles["Poster Abstract"]
        else:
            add(H(outlinelevel=2, stylename=styles["Contribution Heading"], text=heading))
            if values["start"]:
                when = values["start"] + (f"–{values['end']}" if values["end"] else "")
                add(P(stylename=styles["Contribution Time"], text=when))
            authors, abstract = styles["Authors"], styles["Abstract"]
        groups = author_groups(contribution)
        if groups:
            line = P(stylename=authors)
            self.people(line, groups)
            add(line)
        for paragraph in abstract_paragraphs(contribution.description):
            add(P(stylename=abstract, text=paragraph))
        for name in self.options.custom_fields:
            value = custom_value(contribution, name)
            if value:
                line = P(stylename=styles["Custom Field"])
                line.addElement(Span(stylename=styles["Custom Field Name"], text=f"{name}: "))
                line.addText(clean(value))
                add(line)

    def people(self, line: P, groups: list[tuple[str, list[tuple[str, str | None]]]],
               prefix: str = "") -> None:
        """`A, B (Affiliation); C (Other)` into `line`, each name in its text style. Plain text
        between two spans goes in as one text node: odfpy's cost is per node."""
        styles = self.styles
        plain = prefix
        for g, (affiliation, names) in enumerate(groups):
            if g:
                plain += "; "
            for n, (name, style) in enumerate(names):
                if n:
                    plain += ", "
                if style is None:
                    plain += name
                else:
                    if plain:
                        line.addText(plain)
                        plain = ""
                    line.addElement(Span(stylename=styles[style], text=name))
            if affiliation:
                plain += f" ({affiliation})"
        if plain:
            line.addText(plain)


def _by_start(contribution: Contribution) -> tuple:
    return contribution.sort_key


def custom_value(contribution: Contribution, name: str) -> str:
    """A custom field by name, else a contribution attribute of that name (track, type...)."""
    if name in contribution.custom_fields:
        return contribution.custom_fields[name]
    value = getattr(contribution, name, None) if name in _ATTRIBUTE_FIELDS else None
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return "" if value is None else str(value)


_ATTRIBUTE_FIELDS = frozenset({"track", "type", "board_number", "keywords", "session"})


def render_booklet(event: Event, options: BookletOptions | None = None,
                   progress: Progress | None = None) -> bytes:
    """The booklet of `event` as ODT bytes."""
    return BookletRenderer(event, options or BookletOptions()).render(progress)
