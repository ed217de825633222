"""Adding up the reports of batches: a run's totals are the sum of what each batch did.

Every report of opsflow (mails sent, packages delivered, submissions erased, work orders made
...) is a dataclass of counters, lists and flags; `Tally.add` sums the counters, extends the
lists (errors only up to `MAX_ERRORS`, the logs keep them all), adds Counters and ORs the
flags, so that no report writes its own adding-up.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Self

MAX_ERRORS = 20  # error lines a run's total keeps for its table


class Tally:
    """Mixin for a dataclass report: `total.add(batch)` adds a batch's report to the total."""

    def add(self, other: Self) -> None:
        for spec in fields(self):  # type: ignore[arg-type]
            mine, theirs = getattr(self, spec.name), getattr(other, spec.name)
            if isinstance(mine, bool):  # before int: a bool is an int too
                setattr(self, spec.name, mine or theirs)
            elif isinstance(mine, int):
                setattr(self, spec.name, mine + theirs)
            elif isinstance(mine, list):
                room = MAX_ERRORS - len(mine) if spec.name == "errors" else len(theirs)
                mine.extend(theirs[:max(0, room)])
            elif isinstance(mine, dict):  # a Counter adds its counts, a dict takes the keys
                mine.update(theirs)
            # anything else (a nested detail of one batch) is not a total: left as it is
