"""`check_license`, daily: warn OPS at set steps before the license expires; fail when expired.

A warning is recorded and its mail queued to OPS in one transaction (the mail outbox sends
it); a step already warned about for this expiry is not warned about again. An expired
license makes the run fail with a message naming the holder, the date and where to renew.
"""

from __future__ import annotations

from datetime import date

from prefect import flow, get_run_logger, task

from blocks.license import License
from flows.jobs import job_slot
from flows.reporting import report_markdown
from opsflow.license import (
    LicenseExpired,
    LicenseTerms,
    Standing,
    assess,
    warn_ops,
)
from opsflow.settings import get_settings
from opsflow.store import session_scope, utcnow

LICENSE_BLOCK = "opsflow-license"


def load_license(block_name: str) -> License:
    """The license block, or one clear message when it was never saved."""
    try:
        return License.load(block_name)
    except ValueError as exc:
        if "Unable to find block document" not in str(exc):
            raise
        raise LookupError(
            f"no license block named {block_name!r}: save an 'opsflow license' block (holder, "
            "key, expiry, refresh URL) in the Prefect UI or with License(...).save()") from None


@task(name="warn-ops-about-license")
def warn_ops_task(terms: LicenseTerms, today: date, steps: tuple[int, ...]) -> bool:
    """Record and queue the due warning; False when it was given before."""
    settings = get_settings()
    with session_scope(settings.database_url) as session:
        warning = warn_ops(session, terms, assess(terms, today, steps),
                           ops_email=settings.ops_email)
    return warning is not None


@flow(name="check-license")
def check_license(block_name: str = LICENSE_BLOCK, today: date | None = None) -> str:
    """Where the license stands; warns OPS once per step, fails the run once expired."""
    logger = get_run_logger()
    with job_slot():
        terms = load_license(block_name).terms()
        today = today or utcnow().date()
        steps = get_settings().license_warning_days
        assessment = assess(terms, today, steps)
        summary = assessment.summary(terms)
        if assessment.standing is Standing.EXPIRED:
            report_markdown("license", "License expired", f"**{summary}**")
            raise LicenseExpired(summary)
        if assessment.standing is Standing.WARN:
            if warn_ops_task(terms, today, steps):
                logger.warning("%s; OPS warned", summary)
                report_markdown("license-warning", "License expiry warning sent to OPS",
                                f"**{summary}**")
                outcome = "OPS warned"
            else:
                logger.info("%s; OPS was already warned at this step", summary)
                outcome = "OPS was already warned at this step"
        else:
            logger.info(summary)
            outcome = "no warning due"
        report_markdown("license", f"License: {assessment.days_left} days left",
                        f"**{summary}**\n\n- valid until: {terms.expires_on.isoformat()}\n"
                        f"- days left: {assessment.days_left}\n- warning: {outcome}")
    return summary
