"""What an event chooses for its booklet: title, heading templates, language, custom fields.

The Prefect block `blocks.booklet.BookletConfig` holds the same fields and hands them here;
this module keeps them checkable without Prefect (a bad template fails before rendering).
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from datetime import timedelta

# Placeholders a heading template may use.
SESSION_FIELDS = frozenset({"code", "title", "date", "start", "end"})
CONTRIBUTION_FIELDS = frozenset({"code", "title", "start", "end", "duration", "track", "type",
                                 "board"})

# The fixed texts of the booklet, by language.
FIXED_TEXTS: dict[str, dict[str, str]] = {
    "en": {"contents": "Contents", "conveners": "Chair", "outside": "Contributions outside sessions",
           "poster": "Poster session", "minutes": "min",
           "unscheduled": "Unscheduled contributions", "index": "Author index", "page": "page",
           "weekdays": "Monday Tuesday Wednesday Thursday Friday Saturday Sunday"},
    "it": {"contents": "Indice", "conveners": "Presidenza", "outside": "Contributi fuori sessione",
           "poster": "Sessione poster", "minutes": "min",
           "unscheduled": "Contributi fuori programma", "index": "Indice degli autori",
           "page": "pagina",
           "weekdays": "lunedì martedì mercoledì giovedì venerdì sabato domenica"},
    "fr": {"contents": "Table des matières", "conveners": "Présidence",
           "outside": "Contributions hors session", "poster": "Session de posters",
           "minutes": "min", "unscheduled": "Contributions non programmées",
           "index": "Index des auteurs", "page": "page",
           "weekdays": "lundi mardi mercredi jeudi vendredi samedi dimanche"},
    "de": {"contents": "Inhalt", "conveners": "Vorsitz", "outside": "Beiträge außerhalb der Sitzungen",
           "poster": "Postersitzung", "minutes": "Min.",
           "unscheduled": "Nicht eingeplante Beiträge", "index": "Autorenverzeichnis",
           "page": "Seite",
           "weekdays": "Montag Dienstag Mittwoch Donnerstag Freitag Samstag Sonntag"},
}


class BookletOptionsError(ValueError):
    """A booklet option is unusable; the message is one line naming the option."""


@dataclass(frozen=True)
class BookletOptions:
    title: str | None = None  # None: the event's title
    session_heading: str = "{code} {title}"
    contribution_heading: str = "{code} {title}"
    language: str = "en"
    custom_fields: tuple[str, ...] = field(default_factory=tuple)
    pdf: bool = False  # also a PDF made by LibreOffice, beside the ODT (when it is installed)

    def __post_init__(self) -> None:
        if self.language not in FIXED_TEXTS:
            raise BookletOptionsError(
                f"language: {self.language!r} is not one of {', '.join(sorted(FIXED_TEXTS))}")
        _check_template("session_heading", self.session_heading, SESSION_FIELDS)
        _check_template("contribution_heading", self.contribution_heading, CONTRIBUTION_FIELDS)
        object.__setattr__(self, "custom_fields", tuple(self.custom_fields))

    @property
    def texts(self) -> dict[str, str]:
        return FIXED_TEXTS[self.language]


def _check_template(option: str, template: str, allowed: frozenset[str]) -> None:
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise BookletOptionsError(f"{option}: {exc} in {template!r}") from None
    unknown = names - allowed
    if unknown:
        raise BookletOptionsError(
            f"{option}: unknown placeholder {{{sorted(unknown)[0]}}} in {template!r}; "
            f"use {', '.join('{' + n + '}' for n in sorted(allowed))}")


def fill(template: str, values: dict[str, str]) -> str:
    """The template with its values; separators left dangling by an empty value are trimmed."""
    return template.format_map(values).strip(" \t-–—:·|,")


def expiry(hours: float | None, default: timedelta) -> timedelta:
    """How long a booklet is kept: `hours` when given, else the results area's default. Zero
    or less is refused (it used to become the default silently, keeping a file the caller
    meant to throw away)."""
    if hours is None:
        return default
    if not hours > 0:  # also refuses NaN
        raise BookletOptionsError(
            f"expiry_hours: {hours:g} is not a positive number of hours; give more than 0, "
            f"or leave it out to keep the booklet {default.total_seconds() / 3600:g} h")
    return timedelta(hours=hours)
