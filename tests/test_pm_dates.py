"""PM next-date rules: intervals, month ends, excluded weekdays, and refused rules."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from opsflow.workorders.dates import (
    RepeatRule,
    ScheduleError,
    add_months,
    parse_weekdays,
    skip_excluded,
)


def at(y: int, m: int, d: int, h: int = 9) -> datetime:
    return datetime(y, m, d, h, tzinfo=UTC)


def test_31_january_plus_one_month_is_the_end_of_february() -> None:
    assert add_months(at(2027, 1, 31), 1) == at(2027, 2, 28)
    assert add_months(at(2028, 1, 31), 1) == at(2028, 2, 29)  # leap year
    assert add_months(at(2027, 12, 31), 2) == at(2028, 2, 29)  # across the year


def test_month_ends_do_not_drift_over_occurrences() -> None:
    """Counted from the start: February's short month does not pull March to the 28th."""
    rule = RepeatRule.of(at(2027, 1, 31), 1, "months", "")
    assert [rule.nominal(n).date() for n in range(5)] == [
        date(2027, 1, 31), date(2027, 2, 28), date(2027, 3, 31), date(2027, 4, 30),
        date(2027, 5, 31)]


def test_days_and_weeks_keep_the_time_of_day() -> None:
    assert RepeatRule.of(at(2027, 3, 1, 14), 10, "days", "").nominal(3) == at(2027, 3, 31, 14)
    assert RepeatRule.of(at(2027, 3, 1), 2, "weeks", "").nominal(2) == at(2027, 3, 29)


def test_excluded_weekdays_move_the_date_forward() -> None:
    # 2027-01-31 is a Sunday, 2027-02-28 a Sunday as well; 2027-03-31 a Wednesday.
    rule = RepeatRule.of(at(2027, 1, 31), 1, "months", "sat,sun")
    assert [rule.service_date(n).date() for n in range(3)] == [
        date(2027, 2, 1), date(2027, 3, 1), date(2027, 3, 31)]
    # Friday 2027-01-29 with Fri, Sat and Sun excluded lands on Monday.
    assert skip_excluded(at(2027, 1, 29), parse_weekdays("friday, Sat, sun")) == at(2027, 2, 1)


def test_the_weekday_shift_does_not_carry_into_the_next_occurrence() -> None:
    """A date moved to Monday does not make the next occurrence a day later too."""
    rule = RepeatRule.of(at(2027, 1, 2), 7, "days", "sat")  # Saturdays, all excluded
    assert [rule.service_date(n).date() for n in range(3)] == [
        date(2027, 1, 3), date(2027, 1, 10), date(2027, 1, 17)]
    assert rule.nominal(2) == at(2027, 1, 16)


@pytest.mark.parametrize(("every", "unit", "excluded", "message"), [
    (0, "days", "", "repeat interval 0 is not a positive number"),
    (1, "fortnights", "", "repeat unit 'fortnights' is not one of days, weeks, months"),
    (1, "days", "sat,funday", "excluded weekday 'funday' is not one of mon"),
    (1, "days", "mon,tue,wed,thu,fri,sat,sun", "every weekday is excluded"),
])
def test_a_broken_rule_is_refused_with_the_field_named(every: int, unit: str, excluded: str,
                                                       message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        RepeatRule.of(at(2027, 1, 1), every, unit, excluded)
