"""`opsflow mail status` and `opsflow mail retry` on a real store."""

from __future__ import annotations

import pytest

from deployments.cli import main
from opsflow.delivery import seed, tips
from opsflow.delivery.records import MailStatus, Notification, OutgoingMail, ReceiverTip
from opsflow.mail.outbox import enqueue
from opsflow.settings import get_settings
from opsflow.store import session_scope, sessions


@pytest.fixture
def store(sqlite_url: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("OPSFLOW_DATABASE_URL", sqlite_url)
    get_settings.cache_clear()
    yield sqlite_url
    get_settings.cache_clear()


def test_status_and_retry_of_a_failed_tip_mail(store: str, capsys) -> None:
    with session_scope(store) as session:
        seed.add_submissions(session, 1, seed.add_receivers(session, 1))
        enqueue(session, [{"key": "other", "recipient": "x@example.org"}])
    with sessions(store)() as session:
        tips.create_tips(session, claimer="t")
        tips.queue_tip_mails(session, claimer="t")
        mail = session.query(OutgoingMail).filter_by(key="tip:1").one()
        mail.status, mail.attempts, mail.last_error = MailStatus.FAILED, 8, "550 5.1.1 no user"
        session.get(ReceiverTip, 1).notification = Notification.UNABLE
        session.commit()

    assert main(["mail", "status"]) == 0
    out = capsys.readouterr().out
    assert "1 pending, 0 sent, 1 failed" in out
    assert "failed  tip:1  to r1@example.org  after 8 attempt(s): 550 5.1.1 no user" in out

    assert main(["mail", "retry", "tip:1", "nope"]) == 1
    assert "queued 1 of 2 mails again" in capsys.readouterr().out
    with sessions(store)() as session:
        mail = session.query(OutgoingMail).filter_by(key="tip:1").one()
        assert (mail.status, mail.attempts) == (MailStatus.PENDING, 0)
        assert session.get(ReceiverTip, 1).notification == Notification.NOT_NOTIFIED
    assert main(["mail", "retry"]) == 2
    assert "--all-failed" in capsys.readouterr().err
