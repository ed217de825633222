"""Delivery windows: when a subscriber wants to hear from us, in their own time zone."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time, timedelta

from opsflow.timezones import BadTimeZone, zone

__all__ = ["BadTimeZone", "Window", "is_open", "next_opening", "zone"]


@dataclass(frozen=True)
class Window:
    weekday: int  # 0 = Monday, as datetime.weekday()
    starts: time
    ends: time  # before `starts`: the window runs past midnight into the next day


def is_open(windows: Iterable[Window], time_zone: str, now: datetime) -> bool:
    """Whether `now` falls in one of the windows, read in `time_zone`; no windows: always."""
    tz = zone(time_zone)  # a bad zone is reported even where no window needs it
    spans = list(windows)
    if not spans:
        return True
    local = now.astimezone(tz)
    day, clock = local.weekday(), local.time().replace(tzinfo=None)
    for window in spans:
        if window.starts < window.ends:
            if day == window.weekday and window.starts <= clock < window.ends:
                return True
        else:  # past midnight
            if day == window.weekday and clock >= window.starts:
                return True
            if day == (window.weekday + 1) % 7 and clock < window.ends:
                return True
    return False


def next_opening(windows: Iterable[Window], time_zone: str, now: datetime) -> datetime | None:
    """When the next window opens (for reports); None without windows or when open now."""
    spans = list(windows)
    if not spans or is_open(spans, time_zone, now):
        return None
    tz = zone(time_zone)
    local = now.astimezone(tz)
    best: datetime | None = None
    for offset in range(8):
        day = (local + timedelta(days=offset)).date()
        for window in spans:
            if day.weekday() == window.weekday:
                start = datetime.combine(day, window.starts, tzinfo=tz)
                if start > local and (best is None or start < best):
                    best = start
    return best
