"""The license check: warning steps, once per step, re-armed by a renewal, and expiry."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from opsflow import settings as settings_module
from opsflow.delivery.records import OutgoingMail
from opsflow.license import (
    LicenseTerms,
    LicenseWarning,
    Standing,
    assess,
    warn_ops,
)
from opsflow.settings import OpsflowSettings
from opsflow.store import session_scope

EXPIRY = date(2027, 3, 31)
TERMS = LicenseTerms("Harbour Clinic", EXPIRY, "https://licenses.example/harbour")
STEPS = (30, 14, 7, 1)


def on(days_left: int) -> date:
    return EXPIRY - timedelta(days=days_left)


@pytest.mark.parametrize(("days_left", "standing", "step"), [
    (45, Standing.VALID, None),
    (31, Standing.VALID, None),
    (30, Standing.WARN, 30),
    (20, Standing.WARN, 30),
    (14, Standing.WARN, 14),
    (5, Standing.WARN, 7),  # a missed run between 14 and 7 gives step 7, not 14 as well
    (0, Standing.WARN, 1),  # the expiry day is still valid
    (-1, Standing.EXPIRED, None),
])
def test_the_due_step(days_left: int, standing: Standing, step: int | None) -> None:
    assessment = assess(TERMS, on(days_left), STEPS)
    assert (assessment.standing, assessment.step, assessment.days_left) == (
        standing, step, days_left)


def test_an_expired_license_says_whose_since_when_and_where_to_renew() -> None:
    assert assess(TERMS, on(-3), STEPS).summary(TERMS) == (
        "license of Harbour Clinic expired on 2027-03-31 (3 day(s) ago); renew it from "
        "https://licenses.example/harbour")


def test_warning_steps_come_from_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert OpsflowSettings().license_warning_days == STEPS
    monkeypatch.setenv("OPSFLOW_LICENSE_WARNING_DAYS", "7, 60,3")
    assert OpsflowSettings().license_warning_days == (60, 7, 3)
    monkeypatch.setenv("OPSFLOW_LICENSE_WARNING_DAYS", "[10, 2]")
    assert OpsflowSettings().license_warning_days == (10, 2)
    for bad, message in (("soon", "not whole numbers"), ("7,-1", "negative")):
        monkeypatch.setenv("OPSFLOW_LICENSE_WARNING_DAYS", bad)
        with pytest.raises(ValueError, match=message):
            OpsflowSettings()


def warn(url: str, days_left: int, terms: LicenseTerms = TERMS):
    with session_scope(url) as session:
        warning = warn_ops(session, terms, assess(terms, on(days_left), STEPS),
                           ops_email="ops@example.org")
        return warning.step_days if warning else None


def mails(url: str) -> list[OutgoingMail]:
    with session_scope(url) as session:
        return list(session.scalars(select(OutgoingMail).order_by(OutgoingMail.id)))


def test_each_step_is_warned_about_once_and_a_renewal_rearms_them(store_url: str) -> None:
    assert warn(store_url, 40) is None  # nothing due
    assert warn(store_url, 29) == 30
    assert warn(store_url, 28) is None  # same step, the next day
    assert warn(store_url, 29) is None  # a rerun of the same day
    assert warn(store_url, 13) == 14
    queued = mails(store_url)
    assert [m.recipient for m in queued] == ["ops@example.org"] * 2
    assert queued[0].subject == "opsflow license of Harbour Clinic expires in 29 day(s)"
    assert "https://licenses.example/harbour" in queued[0].body

    renewed = LicenseTerms(TERMS.holder, EXPIRY + timedelta(days=365))
    with session_scope(store_url) as session:
        warning = warn_ops(session, renewed, assess(renewed, renewed.expires_on - timedelta(20),
                                                    STEPS), ops_email="ops@example.org")
    assert warning is not None and warning.step_days == 30
    with session_scope(store_url) as session:
        rows = session.scalars(select(LicenseWarning).order_by(LicenseWarning.id)).all()
    assert [(r.expires_on, r.step_days) for r in rows] == [
        (EXPIRY, 30), (EXPIRY, 14), (renewed.expires_on, 30)]
    assert all(r.channel.startswith("outbox:license-warning:Harbour Clinic:") for r in rows)
    assert len(mails(store_url)) == 3


# --- the flow ------------------------------------------------------------------------------

@pytest.fixture
def license_block(prefect_harness: None, sqlite_url: str, monkeypatch: pytest.MonkeyPatch):
    from blocks.license import License
    from flows.jobs import ensure_job_limits

    monkeypatch.setenv("OPSFLOW_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("OPSFLOW_OPS_EMAIL", "ops@example.org")
    settings_module.get_settings.cache_clear()
    ensure_job_limits(3)
    License(holder=TERMS.holder, key=SecretStr("LIC-0000-SECRET"), expires_on=EXPIRY,
            refresh_url=TERMS.refresh_url).save("opsflow-license-test", overwrite=True)
    yield sqlite_url
    settings_module.get_settings.cache_clear()


def test_the_daily_flow_warns_once_and_fails_when_expired(license_block: str, caplog) -> None:
    from flows.license import check_license

    first = check_license("opsflow-license-test", today=on(6), return_state=True)
    assert first.is_completed()
    assert first.result().endswith("in 6 day(s) (warning step 7)")
    again = check_license("opsflow-license-test", today=on(6), return_state=True)
    assert again.is_completed()
    assert [m.subject for m in mails(license_block)] == [
        "opsflow license of Harbour Clinic expires in 6 day(s)"]

    expired = check_license("opsflow-license-test", today=on(-1), return_state=True)
    assert expired.is_failed()
    assert "license of Harbour Clinic expired on 2027-03-31" in expired.message
    assert "LIC-0000-SECRET" not in caplog.text


def test_a_missing_license_block_is_one_clear_failure(license_block: str) -> None:
    from flows.license import check_license

    state = check_license("no-such-license", return_state=True)
    assert state.is_failed()
    assert "no license block named 'no-such-license'" in state.message
