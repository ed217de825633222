"""The programme order of a booklet: days in order; in each day, sessions and contributions
outside sessions interleaved by start time; what has no start in a part of its own at the end.

A printed booklet follows the timetable, as the conference is lived: Thursday's talks come
before Friday's session even when one is inside a session and the other is not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from zoneinfo import ZoneInfo

from opsflow.booklet.indico import Contribution, Event, Session, event_sessions

Item = Session | Contribution  # one entry of a day: a session or a contribution outside any


@dataclass
class Day:
    day: date  # in the event's time zone
    items: list[Item] = field(default_factory=list)


@dataclass
class Programme:
    days: list[Day]
    unscheduled_sessions: list[Session]  # sessions without a start, by code then title
    unscheduled: list[Contribution]  # contributions outside sessions without a start, by code

    def contributions(self) -> list[Contribution]:
        """Every contribution in booklet order (what the author index numbers refer to)."""
        found: list[Contribution] = []
        for day in self.days:
            for item in day.items:
                if isinstance(item, Session):
                    found.extend(session_contributions(item))
                else:
                    found.append(item)
        for session in self.unscheduled_sessions:
            found.extend(session_contributions(session))
        found.extend(self.unscheduled)
        return found


def local_day(moment: datetime, zone: ZoneInfo) -> date:
    """The day of `moment` in the event's zone (a time without zone is the event's)."""
    local = moment.replace(tzinfo=zone) if moment.tzinfo is None else moment.astimezone(zone)
    return local.date()


def session_contributions(session: Session) -> list[Contribution]:
    """A session's contributions by start, then code; those without a start last, by code."""
    return sorted(session.contributions, key=lambda c: c.sort_key)


def _code_key(item: Item) -> tuple[str, str]:
    return (item.label, item.title)


def programme(event: Event) -> Programme:
    """The event in programme order (see the module docstring)."""
    sessions, loose = event_sessions(event)
    zone = event.zone
    by_day: dict[date, list[Item]] = {}
    unscheduled_sessions: list[Session] = []
    unscheduled: list[Contribution] = []
    for session in sessions:
        if session.start is None:
            unscheduled_sessions.append(session)
        else:
            by_day.setdefault(local_day(session.start, zone), []).append(session)
    for contribution in loose:
        if contribution.start is None:
            unscheduled.append(contribution)
        else:
            by_day.setdefault(local_day(contribution.start, zone), []).append(contribution)
    days = []
    for day in sorted(by_day):
        # A session and a talk at the same minute: the session first (its chair opens the slot).
        items = sorted(by_day[day], key=lambda i: (
            i.sort_key[0], 0 if isinstance(i, Session) else 1, i.sort_key[1:]))
        days.append(Day(day, items))
    unscheduled_sessions.sort(key=_code_key)
    unscheduled.sort(key=_code_key)
    return Programme(days, unscheduled_sessions, unscheduled)
