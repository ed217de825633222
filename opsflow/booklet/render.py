"""The abstract booklet as an ODT document, built with odfpy (after JACoW MEOW's booklet).

Layout, in programme order (`opsflow.booklet.programme`): a title page; the contents (days,
sessions, contributions with code and title, each with its page number); a part per day
with its sessions (code, title, date and time range in the event's time zone, conveners)
and the contributions outside sessions interleaved by start time, each contribution with its
code, title, day and time, authors grouped by affiliation (speakers bold, co-authors italic),
the abstract rendered from its Markdown or HTML, and the chosen custom fields; poster
sessions compact; the unscheduled contributions in a part of their own, by code; an author
index (name, affiliation, contribution codes) at the back. Every page but the title page has
a footer with the booklet's title and the page number.

Page numbers in the contents are page-reference fields (`text:bookmark-ref`,
reference-format "page") to a bookmark in each heading. A word processor lays the pages out
when it opens the file, and computes such fields then: LibreOffice shows the right numbers on
opening and in the PDF it makes, with no "update index" (an ODT index, by contrast, keeps the
text it was saved with). The field's saved text is empty: a reader that lays out no pages
shows no number rather than a wrong one.

Every paragraph uses a named (common) style, so a user restyles the whole booklet by editing
one style in LibreOffice. odfpy's element building is the cost of rendering: this module
computes each text once and builds each element with one call, and nothing else per element.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from odf.opendocument import OpenDocumentText
from odf.style import (
    Footer,
    MasterPage,
    PageLayout,
    PageLayoutProperties,
    ParagraphProperties,
    Style,
    TabStop,
    TabStops,
    TextProperties,
)
from odf.text import (
    A,
    Bookmark,
    BookmarkRef,
    H,
    LineBreak,
    P,
    PageNumber,
    Section,
    Span,
    Tab,
)

from opsflow.booklet.indico import Contribution, Event, Person, Session, clean
from opsflow.booklet.markup import LINE_BREAK, Block, blocks
from opsflow.booklet.options import BookletOptions, fill
from opsflow.booklet.programme import programme, session_contributions

Progress = Callable[[int, int], None]  # (contributions done, contributions in all)

PAGE_WIDTH, PAGE_HEIGHT, MARGIN = 21.0, 29.7, 2.0  # cm, A4
TEXT_WIDTH = f"{PAGE_WIDTH - 2 * MARGIN:g}cm"

_RIGHT_TAB = {"position": TEXT_WIDTH, "type": "right", "leaderstyle": "dotted",
              "leadertext": "."}

# Display name -> (paragraph properties, text properties, outline level). The ODF name is the
# display name with spaces encoded as LibreOffice does ("Session Heading" -> Session_20_Heading).
PARAGRAPH_STYLES: dict[str, tuple[dict, dict, int | None]] = {
    "Booklet Title": ({"textalign": "center", "margintop": "6cm", "marginbottom": "0.8cm"},
                      {"fontsize": "26pt", "fontweight": "bold"}, None),
    "Booklet Subtitle": ({"textalign": "center", "breakafter": "page"}, {"fontsize": "14pt"}, None),
    "Contents Heading": ({"marginbottom": "0.4cm"}, {"fontsize": "16pt", "fontweight": "bold"},
                         None),
    "Contents 1": ({"margintop": "0.2cm"}, {"fontsize": "11pt", "fontweight": "bold"}, None),
    "Contents 2": ({"marginleft": "0.5cm"}, {"fontsize": "10pt"}, None),
    "Contents 3": ({"marginleft": "1cm"}, {"fontsize": "9pt"}, None),
    "Day Heading": ({"breakbefore": "page", "keepwithnext": "always", "marginbottom": "0.4cm"},
                    {"fontsize": "20pt", "fontweight": "bold"}, 1),
    "Session Heading": ({"breakbefore": "page", "keepwithnext": "always", "marginbottom": "0.2cm"},
                        {"fontsize": "16pt", "fontweight": "bold"}, 2),
    # The first session of a day: on the day's own page, no break of its own.
    "First Session Heading": ({"keepwithnext": "always", "marginbottom": "0.2cm"},
                              {"fontsize": "16pt", "fontweight": "bold"}, 2),
    "Session Time": ({"marginbottom": "0.1cm"}, {"fontsize": "11pt", "fontstyle": "italic"}, None),
    "Session Conveners": ({"marginbottom": "0.4cm"}, {"fontsize": "11pt"}, None),
    "Contribution Heading": ({"margintop": "0.5cm", "keepwithnext": "always"},
                             {"fontsize": "12pt", "fontweight": "bold"}, 3),
    "Contribution Time": ({"keepwithnext": "always"}, {"fontsize": "10pt"}, None),
    "Authors": ({"marginbottom": "0.15cm", "keepwithnext": "always"}, {"fontsize": "10pt"}, None),
    "Abstract": ({"textalign": "justify", "marginbottom": "0.1cm"}, {"fontsize": "10pt"}, None),
    "Abstract Heading": ({"margintop": "0.1cm", "keepwithnext": "always"},
                         {"fontsize": "10pt", "fontweight": "bold"}, None),
    "Abstract List": ({"marginleft": "0.6cm", "textindent": "-0.4cm"}, {"fontsize": "10pt"},
                      None),
    "Custom Field": ({}, {"fontsize": "9pt"}, None),
    "Poster Title": ({"margintop": "0.25cm", "keepwithnext": "always"},
                     {"fontsize": "10pt", "fontweight": "bold"}, None),
    "Poster Authors": ({"keepwithnext": "always"}, {"fontsize": "9pt"}, None),
    "Poster Abstract": ({"textalign": "justify"}, {"fontsize": "9pt"}, None),
    "Index Heading": ({"breakbefore": "page", "marginbottom": "0.4cm"},
                      {"fontsize": "16pt", "fontweight": "bold"}, 1),
    "Index Entry": ({"marginleft": "0.5cm", "textindent": "-0.5cm"}, {"fontsize": "9pt"}, None),
    "Footer": ({"textalign": "center"}, {"fontsize": "9pt"}, None),
}
TEXT_STYLES: dict[str, dict] = {
    "Speaker": {"fontweight": "bold"},
    "Co-author": {"fontstyle": "italic"},
    "Custom Field Name": {"fontweight": "bold"},
    "Strong": {"fontweight": "bold"},
    "Emphasis": {"fontstyle": "italic"},
    "Strong Emphasis": {"fontweight": "bold", "fontstyle": "italic"},
}
CONTENTS_STYLES = ("Contents 1", "Contents 2", "Contents 3")
TITLE_MASTER, BODY_MASTER = "Title Page", "Standard"


def odf_name(display: str) -> str:
    return display.replace(" ", "_20_")


def add_booklet_styles(doc: OpenDocumentText, footer_title: str = "") -> dict[str, Style]:
    """Add the booklet's named styles and page styles to `doc`; returns them by display name.

    Two master pages: the title page's, without footer, followed by the body's, whose footer
    carries `footer_title` and the page number."""
    layout = PageLayout(name="Booklet_Page")
    layout.addElement(PageLayoutProperties(
        pagewidth=f"{PAGE_WIDTH}cm", pageheight=f"{PAGE_HEIGHT}cm", printorientation="portrait",
        margintop=f"{MARGIN}cm", marginbottom=f"{MARGIN * 0.75}cm", marginleft=f"{MARGIN}cm",
        marginright=f"{MARGIN}cm"))
    doc.automaticstyles.addElement(layout)
    styles: dict[str, Style] = {}
    for display, (paragraph, text, level) in PARAGRAPH_STYLES.items():
        extra: dict = {"defaultoutlinelevel": str(level)} if level else {}
        if display == "Booklet Title":
            extra["masterpagename"] = odf_name(TITLE_MASTER)
        style = Style(name=odf_name(display), displayname=display, family="paragraph", **extra)
        properties = ParagraphProperties(**paragraph)
        if display in CONTENTS_STYLES or display == "Footer":
            stops = TabStops()
            stops.addElement(TabStop(**_RIGHT_TAB) if display != "Footer" else TabStop(
                position=TEXT_WIDTH, type="right"))
            properties.addElement(stops)
        style.addElement(properties)
        style.addElement(TextProperties(**text))
        doc.styles.addElement(style)
        styles[display] = style
    for display, text in TEXT_STYLES.items():
        style = Style(name=odf_name(display), displayname=display, family="text")
        style.addElement(TextProperties(**text))
        doc.styles.addElement(style)
        styles[display] = style
    body = MasterPage(name=BODY_MASTER, pagelayoutname=layout)
    footer = Footer()
    line = P(stylename=styles["Footer"], text=f"{footer_title} · " if footer_title else "")
    line.addElement(PageNumber(selectpage="current", numformat="1", text=""))
    footer.addElement(line)
    body.addElement(footer)
    doc.masterstyles.addElement(body)
    doc.masterstyles.addElement(MasterPage(name=odf_name(TITLE_MASTER), displayname=TITLE_MASTER,
                                           pagelayoutname=layout, nextstylename=BODY_MASTER))
    return styles


def in_zone(moment: datetime, zone: ZoneInfo) -> datetime:
    """A time of the export in the event's zone (a time without zone is taken as the event's)."""
    return moment.replace(tzinfo=zone) if moment.tzinfo is None else moment.astimezone(zone)


def author_groups(contribution: Contribution) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """Authors grouped by affiliation, in order of first appearance: [(affiliation,
    [(name, text style or None)])]. Speakers are bold, co-authors italic; a speaker who is
    not among the authors is listed too. A person is the same name and affiliation."""
    speakers = {p.key for p in contribution.speakers}
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
    return list(groups.items())


@dataclass
class IndexEntry:
    """One person of the author index: listed once per name and affiliation."""

    sort_key: tuple[str, str, str]
    name: str  # "Last, First"
    affiliation: str
    codes: list[str] = field(default_factory=list)


def index_name(person: Person) -> tuple[tuple[str, str, str], str]:
    if person.last_name and person.first_name:
        shown = f"{person.last_name}, {person.first_name}"
        key = (person.last_name.casefold(), person.first_name.casefold())
    else:
        shown = person.name
        last = shown.rsplit(" ", 1)[-1]
        key = (last.casefold(), shown.casefold())
    return (*key, (person.affiliation or "").casefold()), shown


class BookletRenderer:
    """Renders one event; one instance per booklet."""

    def __init__(self, event: Event, options: BookletOptions) -> None:
        self.event = event
        self.options = options
        self.texts = options.texts
        self.zone = event.zone
        self.weekdays = self.texts["weekdays"].split()
        self.title = clean(options.title or event.title)
        self.doc = OpenDocumentText()
        self.styles = add_booklet_styles(self.doc, self.title)
        self.text = self.doc.text
        self.index: dict[tuple[str, str], IndexEntry] = {}
        self._bookmarks = 0

    # -- formatting -----------------------------------------------------------------------

    def day(self, moment: datetime) -> str:
        return self.day_name(in_zone(moment, self.zone).date())

    def day_name(self, day: date) -> str:
        return f"{self.weekdays[day.weekday()]} {day:%Y-%m-%d}"

    def clock(self, moment: datetime | None) -> str:
        if moment is None:
            return ""
        local = in_zone(moment, self.zone)
        return f"{local.hour:02d}:{local.minute:02d}"

    def session_values(self, session: Session) -> dict[str, str]:
        return {"code": session.label, "title": session.title,
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
        return {"code": contribution.label, "title": contribution.title,
                "start": self.clock(start), "end": end,
                "duration": f"{minutes:g}" if minutes else "", "track": contribution.track or "",
                "type": contribution.type or "", "board": contribution.board_number or ""}

    def contribution_time(self, contribution: Contribution, values: dict[str, str]) -> str:
        """The time line: always with its day, which no heading above it gives for sure."""
        if contribution.start is None:
            return ""
        return f"{self.day(contribution.start)}, {values['start']}" + (
            f"–{values['end']}" if values["end"] else "")

    # -- building -------------------------------------------------------------------------

    def render(self, progress: Progress | None = None) -> bytes:
        """The booklet as ODT bytes."""
        plan = programme(self.event)
        total = len(plan.contributions())
        done, step = 0, max(1, total // 20)

        def advance() -> None:
            nonlocal done
            done += 1
            if progress and done % step == 0:
                progress(done, total)

        self.title_page()
        contents = self.contents_heading()
        entries: list[P] = []  # the contents, filled while the body is built
        for day in plan.days:
            self.day_heading(self.day_name(day.day), entries)
            first = True
            for item in day.items:
                if isinstance(item, Session):
                    self.session(item, first, entries, advance)
                else:
                    self.contribution(item, False, 2, entries)
                    advance()
                first = False
        if plan.unscheduled_sessions or plan.unscheduled:
            self.day_heading(self.texts["unscheduled"], entries)
            first = True
            for session in plan.unscheduled_sessions:
                self.session(session, first, entries, advance)
                first = False
            for contribution in plan.unscheduled:
                self.contribution(contribution, False, 2, entries)
                advance()
        self.author_index(entries)
        for entry in entries:  # into the document right after the contents' heading
            contents.addElement(entry)
        if progress:
            progress(total, total)
        out = io.BytesIO()
        self.doc.write(out)
        return out.getvalue()

    def title_page(self) -> None:
        event = self.event
        self.text.addElement(P(stylename=self.styles["Booklet Title"], text=self.title))
        subtitle = event.title if self.options.title else ""
        if event.start is not None:
            dates = self.day(event.start)
            if event.end is not None and self.day(event.end) != dates:
                dates += f" – {self.day(event.end)}"
            subtitle = f"{subtitle} · {dates}" if subtitle else dates
        if event.location:
            subtitle += f" · {event.location}"
        self.text.addElement(P(stylename=self.styles["Booklet Subtitle"], text=subtitle))

    def contents_heading(self) -> Section:
        """The contents' heading, and a section its entries go into once they are known."""
        section = Section(name="Contents")
        section.addElement(P(stylename=self.styles["Contents Heading"],
                             text=self.texts["contents"]))
        self.text.addElement(section)
        return section

    def bookmark(self) -> str:
        self._bookmarks += 1
        return f"b{self._bookmarks}"

    def contents_entry(self, entries: list[P], level: int, text: str, mark: str) -> None:
        line = P(stylename=self.styles[CONTENTS_STYLES[level - 1]], text=text)
        line.addElement(Tab())
        line.addElement(BookmarkRef(referenceformat="page", refname=mark))
        entries.append(line)

    def heading(self, style: str, level: int, text: str, entries: list[P],
                contents_text: str | None = None) -> None:
        """A heading with a bookmark, and its contents entry pointing at that bookmark."""
        mark = self.bookmark()
        element = H(outlinelevel=level, stylename=self.styles[style])
        element.addElement(Bookmark(name=mark))
        element.addText(text)
        self.text.addElement(element)
        self.contents_entry(entries, min(level, 3), contents_text or text, mark)

    def day_heading(self, text: str, entries: list[P]) -> None:
        self.heading("Day Heading", 1, text, entries)

    def session(self, session: Session, first: bool, entries: list[P],
                advance: Callable[[], None]) -> None:
        styles = self.styles
        heading = fill(self.options.session_heading, self.session_values(session))
        when = self.session_time(session)
        span = f"{self.clock(session.start)}–{self.clock(session.end)}" if (
            session.start and session.end) else self.clock(session.start)
        self.heading("First Session Heading" if first else "Session Heading", 2, heading, entries,
                     f"{heading} — {span}" if span else heading)
        if session.poster:
            when = f"{self.texts['poster']} · {when}" if when else self.texts["poster"]
        if when:
            self.text.addElement(P(stylename=styles["Session Time"], text=when))
        if session.conveners:
            line = P(stylename=styles["Session Conveners"])
            self.people(line, [(p.affiliation or "", [(p.name, None)])
                               for p in session.conveners if p.name],
                        prefix=f"{self.texts['conveners']}: ")
            self.text.addElement(line)
        poster = session.poster
        for contribution in session_contributions(session):
            self.contribution(contribution, poster, 3, entries)
            advance()

    def contribution(self, contribution: Contribution, poster: bool, level: int,
                     entries: list[P]) -> None:
        styles, add = self.styles, self.text.addElement
        values = self.contribution_values(contribution)
        heading = fill(self.options.contribution_heading, values)
        mark = self.bookmark()
        if poster:
            title = P(stylename=styles["Poster Title"])
            authors, abstract = styles["Poster Authors"], styles["Poster Abstract"]
        else:
            title = H(outlinelevel=level, stylename=styles["Contribution Heading"])
            authors, abstract = styles["Authors"], styles["Abstract"]
        title.addElement(Bookmark(name=mark))
        title.addText(heading)
        add(title)
        code_title = " ".join(p for p in (contribution.label, contribution.title) if p)
        self.contents_entry(entries, level, code_title, mark)
        if not poster:
            when = self.contribution_time(contribution, values)
            if when:
                add(P(stylename=styles["Contribution Time"], text=when))
        groups = author_groups(contribution)
        if groups:
            line = P(stylename=authors)
            self.people(line, groups)
            add(line)
        self.remember_authors(contribution)
        for block in blocks(contribution.description):
            add(self.block(block, abstract))
        for name in self.options.custom_fields:
            value = custom_value(contribution, name)
            if value:
                line = P(stylename=styles["Custom Field"])
                line.addElement(Span(stylename=styles["Custom Field Name"], text=f"{name}: "))
                line.addText(value)
                add(line)

    def block(self, block: Block, abstract: Style) -> P:
        """One paragraph of an abstract, its runs as text, spans, links and line breaks."""
        styles = self.styles
        if block.kind == "p" and len(block.runs) == 1 and block.runs[0][1:] == (None, None):
            return P(stylename=abstract, text=block.runs[0][0])  # the usual, plain paragraph
        style = {"h": styles["Abstract Heading"], "li": styles["Abstract List"]}.get(
            block.kind, abstract)
        line = P(stylename=style, text=block.marker)
        for run in block.runs:
            if run == LINE_BREAK:
                line.addElement(LineBreak())
                continue
            text, span, href = run
            if href:
                link = A(type="simple", href=href)
                if span:
                    link.addElement(Span(stylename=styles[span], text=text))
                else:
                    link.addText(text)
                line.addElement(link)
            elif span:
                line.addElement(Span(stylename=styles[span], text=text))
            else:
                line.addText(text)
        return line

    def remember_authors(self, contribution: Contribution) -> None:
        code = contribution.label or contribution.title
        for people in (contribution.primaryauthors, contribution.coauthors, contribution.speakers):
            for person in people:
                if not person.name:
                    continue
                entry = self.index.get(person.key)
                if entry is None:
                    sort_key, shown = index_name(person)
                    entry = self.index[person.key] = IndexEntry(sort_key, shown,
                                                                person.affiliation or "")
                if not entry.codes or entry.codes[-1] != code:
                    entry.codes.append(code)

    def author_index(self, entries: list[P]) -> None:
        if not self.index:
            return
        self.heading("Index Heading", 1, self.texts["index"], entries)
        style = self.styles["Index Entry"]
        add = self.text.addElement
        for entry in sorted(self.index.values(), key=lambda e: e.sort_key):
            who = f"{entry.name} ({entry.affiliation})" if entry.affiliation else entry.name
            add(P(stylename=style, text=f"{who} — {', '.join(entry.codes)}"))

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

