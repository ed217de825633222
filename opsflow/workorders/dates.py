"""The next-date rules of preventive maintenance (PM).

A PM repeats every N days, weeks or months from its start. Occurrence n falls on
start + n x interval, counted from the start rather than from the previous date, so month ends
do not drift: 31 January, 28 (29) February, 31 March, 30 April. That nominal date is then moved
forward past excluded weekdays (no service on a Sunday); the moved date is when the service
happens, and every other date on the PM moves by the same amount.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from dateutil.relativedelta import relativedelta

WEEKDAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_WEEKDAY_LOOKUP = {name: day for day, full in enumerate(_FULL_NAMES) for name in (full, full[:3])}


class RepeatUnit(enum.StrEnum):
    DAYS = "days"
    WEEKS = "weeks"
    MONTHS = "months"


class ScheduleError(ValueError):
    """A PM's repeat rule cannot produce dates; the message names the bad field."""


def add_months(moment: datetime, months: int) -> datetime:
    """`moment` plus whole months, the day clamped to the month's end (31 Jan + 1 = 28/29 Feb):
    `relativedelta`'s own rule."""
    return moment + relativedelta(months=months)


def parse_weekdays(text: str | None) -> frozenset[int]:
    """`"sat,sun"` or `"Saturday, Sunday"` -> {5, 6} (Monday is 0); empty excludes nothing."""
    days: set[int] = set()
    for part in (text or "").replace(" ", "").lower().split(","):
        if not part:
            continue
        if part not in _WEEKDAY_LOOKUP:
            raise ScheduleError(
                f"excluded weekday {part!r} is not one of {', '.join(WEEKDAY_NAMES)}")
        days.add(_WEEKDAY_LOOKUP[part])
    if len(days) == 7:
        raise ScheduleError("every weekday is excluded, so no date can ever be found")
    return frozenset(days)


def format_weekdays(days: frozenset[int]) -> str:
    return ",".join(WEEKDAY_NAMES[d] for d in sorted(days))


@dataclass(frozen=True)
class RepeatRule:
    """Every `every` `unit` from `start`, never on an excluded weekday."""

    start: datetime
    every: int
    unit: RepeatUnit
    excluded: frozenset[int] = frozenset()

    @classmethod
    def of(cls, start: datetime, every: int, unit: str, excluded: str | None) -> RepeatRule:
        """Build the rule from a PM's stored fields, naming the field that is wrong."""
        try:
            repeat_unit = RepeatUnit(unit)
        except ValueError:
            raise ScheduleError(
                f"repeat unit {unit!r} is not one of {', '.join(u.value for u in RepeatUnit)}"
            ) from None
        if every < 1:
            raise ScheduleError(f"repeat interval {every} is not a positive number")
        return cls(start=start, every=every, unit=repeat_unit, excluded=parse_weekdays(excluded))

    def nominal(self, occurrence: int) -> datetime:
        """Occurrence n before the weekday rule: start + n x interval."""
        if occurrence < 0:
            raise ValueError("occurrences count from 0")
        steps = occurrence * self.every
        if self.unit is RepeatUnit.DAYS:
            return self.start + timedelta(days=steps)
        if self.unit is RepeatUnit.WEEKS:
            return self.start + timedelta(weeks=steps)
        return add_months(self.start, steps)

    def service_date(self, occurrence: int) -> datetime:
        """When occurrence n is served: its nominal date moved forward past excluded days."""
        return skip_excluded(self.nominal(occurrence), self.excluded)


def skip_excluded(moment: datetime, excluded: frozenset[int]) -> datetime:
    """Move forward a day at a time until the weekday is not excluded (at most six days)."""
    if len(excluded) >= 7:
        raise ScheduleError("every weekday is excluded, so no date can ever be found")
    while moment.weekday() in excluded:
        moment += timedelta(days=1)
    return moment
