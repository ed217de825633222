"""Time zones by IANA name, with the one message every area gives for a name that is not one.

Delivery windows (a subscriber's zone) and the booklet (an event's zone) both read a zone name
from user input.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class BadTimeZone(ValueError):
    """A time zone name that is not in the IANA database (a ValueError, so that pydantic
    validators report it as the field's error)."""


def zone(name: str) -> ZoneInfo:
    """The zone called `name` (e.g. 'Europe/Berlin'); BadTimeZone naming it otherwise."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadTimeZone(f"unknown time zone {name!r}") from None
