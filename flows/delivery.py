"""Delivery flows (seed 000 GlobaLeaks, seed 002 AyaNova notifications).

Each flow is a list of steps: claim a batch, hand it to opsflow.delivery, repeat until the
queue is empty. One task run per batch of several hundred rows, never one per item. The
`now` parameter sets the clock (tests use it instead of sleeping); by default it is the time
of each batch.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from prefect import flow, get_run_logger, task
from prefect.blocks.core import Block
from prefect.cache_policies import NO_CACHE

from blocks.smtp import SmtpServer
from blocks.targets import open_transport
from flows.jobs import job_slot
from flows.reporting import progress, report_table, row
from opsflow.claim import claimer_name, until_short_batch
from opsflow.delivery import client, notify, packages, tips
from opsflow.mail.outbox import MailPolicy, SendReport, due_count, send_batch
from opsflow.mail.smtp import SmtpUnavailable
from opsflow.settings import get_settings
from opsflow.store import sessions, store_url
from opsflow.transports.base import Transport
from opsflow.transports.local import LocalTransport

SMTP_BLOCK = "opsflow-smtp"


# --- tips ----------------------------------------------------------------------------------

@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def create_tips_batch(database_url: str, claimer: str, batch_size: int,
                      now: datetime | None) -> tuple[int, int]:
    with sessions(database_url)() as session:
        result = tips.create_tips(session, claimer=claimer, limit=batch_size, now=now)
    return result.claimed, result.created


@flow(retries=2, retry_delay_seconds=30)
def create_tips(database_url: str | None = None, batch_size: int = 1000,
                now: datetime | None = None) -> dict[str, int]:
    """Every finalized submission gets exactly one tip per receiver."""
    with job_slot():
        url, claimer = store_url(database_url), claimer_name("create_tips:")
        submissions = created = 0
        try:
            for claimed, made in until_short_batch(
                    lambda: create_tips_batch(url, claimer, batch_size, now), batch_size,
                    taken=lambda result: result[0]):
                submissions, created = submissions + claimed, created + made
        finally:
            report_table("create-tips", f"Tips: {created} created for {submissions} "
                         "finalized submissions",
                         [row("finalized submissions given their tips", submissions,
                              note=f"{created} tips, one per receiver")])
        get_run_logger().info("%d submissions, %d tips created", submissions, created)
        return {"submissions": submissions, "tips": created}


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def queue_tip_mails_batch(database_url: str, claimer: str, batch_size: int,
                          digest_window_s: float, now: datetime | None) -> tuple[int, int]:
    with sessions(database_url)() as session:
        result = tips.queue_tip_mails(session, claimer=claimer, limit=batch_size, now=now,
                                      digest_window=timedelta(seconds=digest_window_s))
    return result.claimed, result.created


@flow(retries=2, retry_delay_seconds=30)
def notify_receivers(database_url: str | None = None, batch_size: int = 2000,
                     digest_window_s: float = 600, now: datetime | None = None
                     ) -> dict[str, int]:
    """Queue one mail per `not notified` tip; `send_mail` sends it and marks the tip."""
    with job_slot():
        url, claimer = store_url(database_url), claimer_name("notify_receivers:")
        tips_seen = queued = 0
        try:
            for claimed, made in until_short_batch(
                    lambda: queue_tip_mails_batch(url, claimer, batch_size, digest_window_s,
                                                  now),
                    batch_size, taken=lambda result: result[0]):
                tips_seen, queued = tips_seen + claimed, queued + made
        finally:
            report_table("notify-receivers", f"Notifications: {queued} mails queued for "
                         f"{tips_seen} tips",
                         [row("tips whose mail is queued", tips_seen,
                              note=f"{queued} new mails (a digest covers several tips; a mail "
                                   "queued before is not queued again)")])
        get_run_logger().info("%d tips, %d mails queued", tips_seen, queued)
        return {"tips": tips_seen, "mails_queued": queued}


# --- mail ----------------------------------------------------------------------------------

@task(cache_policy=NO_CACHE)
def send_mail_batch(database_url: str, smtp_block: str, claimer: str, batch_size: int,
                    policy: MailPolicy, now: datetime | None) -> SendReport:
    server = SmtpServer.load(smtp_block)
    with sessions(database_url)() as session, server.sender() as sender:
        report = send_batch(session, sender, claimer=claimer, limit=batch_size, policy=policy,
                            now=now)
    logger = get_run_logger()
    for error in report.errors[:10]:
        logger.warning("%s", error)
    return report


# A run drains the queue in batches of one session each (each bounded by the SMTP block's
# session deadline); the flow's own timeout bounds the whole run, whatever the server does.
SEND_MAIL_TIMEOUT_S = 3600


# No flow retries: a retry a minute after the server was found down would find every mail
# backing off and end Completed, hiding the failure; the next triggered or scheduled run is
# the retry, and each mail keeps its own backoff.
@flow(timeout_seconds=SEND_MAIL_TIMEOUT_S)
def send_mail(database_url: str | None = None, smtp_block: str = SMTP_BLOCK,
              batch_size: int = 500, max_attempts: int = 8, backoff_base_s: float = 60,
              backoff_max_s: float = 6 * 3600, hourly_limit: int = 100,
              now: datetime | None = None) -> dict[str, int]:
    """Drain the outgoing mail queue, one SMTP connection per batch.

    Retries back off per mail; a server that is down ends the batch, with every mail in it
    counted and delayed, rather than stalling the queue, and the run ends Failed with the
    reason (after the backoff is recorded), so that the UI shows it.
    """
    with job_slot():
        url, claimer = store_url(database_url), claimer_name("send_mail:")
        policy = MailPolicy(max_attempts=max_attempts, hourly_limit=hourly_limit,
                            backoff_base=timedelta(seconds=backoff_base_s),
                            backoff_max=timedelta(seconds=backoff_max_s))
        with sessions(url)() as session:
            ahead = due_count(session, now)
        total = SendReport()
        try:
            with progress("send-mail-progress", "mails due at the start", ahead) as sending:
                for report in until_short_batch(
                        lambda: send_mail_batch(url, smtp_block, claimer, batch_size, policy,
                                                now),
                        batch_size, taken=lambda report: report.claimed):
                    total.add(report)
                    sending.advance(report.claimed)
                    if report.server_down:  # the rest waits for the next run, no timeouts here
                        break
        finally:
            report_table("send-mail", _mail_title(total), _mail_rows(total))
        figures = {k: int(v) for k, v in vars(total).items() if k != "errors"}
        get_run_logger().info("mail: %s", figures)
        if total.server_down:
            raise SmtpUnavailable(f"{_mail_title(total)}: {total.errors[0]}")
        return figures


def _mail_title(total: SendReport) -> str:
    down = "; the SMTP server was unreachable" if total.server_down else ""
    return (f"Outgoing mail: {total.sent} sent, {total.deferred} held back, "
            f"{total.retried} to retry, {total.failed} given up{down}")


def _mail_rows(total: SendReport) -> list[dict[str, object]]:
    return [row("messages sent", total.sent, note=f"{total.digested} mails inside digests"),
            row("held back by the hourly limit", 0, skipped=total.deferred),
            row("to be tried again (backoff)", 0, failed=total.retried, reasons=total.errors),
            row("given up (attempt cap)", 0, failed=total.failed)]


# --- files ---------------------------------------------------------------------------------

def _transport(target_block: str | None, target_folder: str | None) -> Transport | None:
    """The target of the packages: a saved target block ("block-type-slug/name": an SFTP
    server, an S3 bucket or a local folder), a local folder path, or none (packages then stay
    `delivery available` for the receivers to fetch)."""
    if target_folder:
        return LocalTransport(target_folder)
    if target_block:
        return open_transport(Block.load(target_block))
    return None


@task(cache_policy=NO_CACHE, retries=1, retry_delay_seconds=10)
def deliver_files_batch(database_url: str, claimer: str, batch_size: int, package_folder: str,
                        target_block: str | None, target_folder: str | None,
                        policy: packages.DeliveryPolicy, now: datetime | None
                        ) -> packages.DeliveryReport:
    transport = _transport(target_block, target_folder)
    try:
        with sessions(database_url)() as session:
            report = packages.deliver_batch(session, folder=Path(package_folder),
                                            transport=transport, claimer=claimer,
                                            limit=batch_size, policy=policy, now=now)
    finally:
        if transport is not None:
            transport.close()
    logger = get_run_logger()
    for error in report.errors[:10]:
        logger.warning("%s", error)
    return report


@flow(retries=1, retry_delay_seconds=60)
def deliver_files(database_url: str | None = None, package_folder: str | None = None,
                  target_block: str | None = None, target_folder: str | None = None,
                  batch_size: int = 100, max_attempts: int = 5, now: datetime | None = None
                  ) -> dict[str, int]:
    """Package each `not yet delivered` tip (checked, encrypted when the receiver has a key),
    then push it to the target: `delivery available`, then `delivery performed`."""
    with job_slot():
        url, claimer = store_url(database_url), claimer_name("deliver_files:")
        folder = package_folder or str(get_settings().data_dir / "packages")
        policy = packages.DeliveryPolicy(max_attempts=max_attempts)
        total = packages.DeliveryReport()
        ahead = _tips_to_deliver(url, bool(target_block or target_folder), now)
        try:
            with progress("deliver-files-progress", "tips to deliver", ahead) as delivering:
                for report in until_short_batch(
                        lambda: deliver_files_batch(url, claimer, batch_size, folder,
                                                    target_block, target_folder, policy, now),
                        batch_size, taken=lambda report: report.claimed):
                    total.add(report)
                    delivering.advance(report.claimed)
        finally:
            report_table("deliver-files", f"File delivery: {total.performed} delivered, "
                         f"{total.available} available, {total.retried} to retry, "
                         f"{total.unable} unable", [
                             row("packages pushed to the target (delivery performed)",
                                 total.performed),
                             row("packages made (delivery available)", total.available),
                             row("tips without files (no data available)", 0,
                                 skipped=total.no_data),
                             row("to be tried again", 0, failed=total.retried,
                                 reasons=total.errors),
                             row("unable to be delivered (attempt cap)", 0,
                                 failed=total.unable)])
        return {k: v for k, v in vars(total).items() if k != "errors"}


def _tips_to_deliver(url: str, with_target: bool, now: datetime | None) -> int:
    """How many tips a run has ahead of it, for its progress (the claim's own filter)."""
    with sessions(url)() as session:
        return packages.due_count(session, pushing=with_target, now=now)


# --- notifications (AyaNova) ---------------------------------------------------------------

@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def deliver_notifications_batch(database_url: str, claimer: str, batch_size: int,
                                now: datetime | None) -> notify.NotifyReport:
    with sessions(database_url)() as session:
        report = notify.deliver_batch(session, claimer=claimer, limit=batch_size, now=now)
    for error in report.errors[:10]:
        get_run_logger().warning("%s", error)
    return report


@flow(retries=1, retry_delay_seconds=60)
def deliver_notifications(database_url: str | None = None, batch_size: int = 500,
                          now: datetime | None = None) -> dict[str, int]:
    """Pending events to each subscriber whose delivery window is open now; the rest wait.

    E-mail and SMS items are queued for `send_mail`; memos are written at once."""
    with job_slot():
        url, claimer = store_url(database_url), claimer_name("deliver_notifications:")
        totals = {"events": 0, "delivered": 0, "waiting": 0, "removed": 0}
        errors: list[str] = []
        try:
            for report in until_short_batch(
                    lambda: deliver_notifications_batch(url, claimer, batch_size, now),
                    batch_size, taken=lambda report: report.events):
                for name in totals:
                    totals[name] += getattr(report, name)
                errors.extend(report.errors[:3])
        finally:
            with sessions(url)() as session:
                notify.release_waiting(session, claimer=claimer)
            report_table("deliver-notifications", f"Notifications: {totals['delivered']} "
                         f"delivered from {totals['events']} events, {totals['waiting']} "
                         "waiting for their window", [
                             row("deliveries to subscribers", totals["delivered"],
                                 note="e-mail and SMS queued for send_mail; memos written",
                                 reasons=errors),
                             row("waiting: delivery window closed", 0,
                                 skipped=totals["waiting"]),
                             row("events every subscriber now has (removed)",
                                 totals["removed"])])
        get_run_logger().info("notifications: %s", totals)
        return totals


@task(cache_policy=NO_CACHE)
def deliver_client_notifications_batch(database_url: str, smtp_block: str, claimer: str,
                                       batch_size: int, on_unreachable: str,
                                       now: datetime | None) -> client.ClientReport:
    server = SmtpServer.load(smtp_block)
    with sessions(database_url)() as session, server.sender() as sender:
        report = client.deliver_batch(session, sender, claimer=claimer, limit=batch_size,
                                      on_unreachable=on_unreachable,  # type: ignore[arg-type]
                                      now=now)
    for error in report.errors[:10]:
        get_run_logger().warning("%s", error)
    return report


@flow(retries=2, retry_delay_seconds=300, timeout_seconds=SEND_MAIL_TIMEOUT_S)
def deliver_client_notifications(database_url: str | None = None,
                                 smtp_block: str = SMTP_BLOCK, batch_size: int = 200,
                                 on_unreachable: Literal["stop", "drop"] = "stop",
                                 now: datetime | None = None) -> dict[str, int]:
    """Client notifications (whole EML messages) over SMTP; each is removed once tried.

    `on_unreachable`: "stop" fails the run when the SMTP server cannot be reached (the
    messages stay for the retry), "drop" logs each one undeliverable and removes it."""
    with job_slot():
        url, claimer = store_url(database_url), claimer_name("deliver_client_notifications:")
        totals = {"sent": 0, "dropped": 0}
        errors: list[str] = []
        try:
            batches = until_short_batch(
                lambda: deliver_client_notifications_batch(url, smtp_block, claimer,
                                                           batch_size, on_unreachable, now),
                batch_size, taken=lambda report: report.claimed)
            try:
                for report in batches:
                    totals["sent"] += report.sent
                    totals["dropped"] += report.dropped
                    errors.extend(report.errors[:3])
            except SmtpUnavailable as exc:
                get_run_logger().error("SMTP server unreachable, stopping: %s", exc)
                errors.append(f"SMTP server unreachable: {exc}")
                raise
        finally:
            report_table("deliver-client-notifications", f"Client notifications: "
                         f"{totals['sent']} sent, {totals['dropped']} dropped", [
                             row("messages sent", totals["sent"]),
                             row("dropped as undeliverable", 0, failed=totals["dropped"],
                                 reasons=errors)])
        get_run_logger().info("client notifications: %s", totals)
        return totals
