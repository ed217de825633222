"""Adding up batch reports (opsflow.tally): counters add, lists extend, errors are capped,
flags OR, Counters add, and a per-batch detail is left alone."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from opsflow.mail.outbox import SendReport
from opsflow.tally import MAX_ERRORS, Tally


@dataclass
class Sample(Tally):
    done: int = 0
    down: bool = False
    ids: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    hosts: Counter[str] = field(default_factory=Counter)
    detail: str | None = None


def test_a_total_is_the_sum_of_its_batches() -> None:
    total = Sample(detail="first")
    total.add(Sample(done=2, ids=[1, 2], errors=["a"], hosts=Counter(h=1)))
    total.add(Sample(done=3, down=True, ids=[3], errors=["b"] * 30, hosts=Counter(h=2, g=1),
                     detail="second"))
    assert (total.done, total.down, total.ids) == (5, True, [1, 2, 3])
    assert len(total.errors) == MAX_ERRORS and total.errors[0] == "a"
    assert total.hosts == Counter(h=3, g=1)
    assert total.detail == "first"


def test_the_mail_report_adds_up_as_it_did_by_hand() -> None:
    total = SendReport()
    total.add(SendReport(claimed=5, sent=4, failed=1, errors=["refused"]))
    total.add(SendReport(claimed=2, retried=2, server_down=True))
    assert (total.claimed, total.sent, total.failed, total.retried) == (7, 4, 1, 2)
    assert total.server_down and total.errors == ["refused"]
