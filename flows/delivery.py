"""Delivery flows (seed 000 GlobaLeaks, seed 002 AyaNova notifications).

Each flow is a list of steps: claim a batch, hand it to opsflow.delivery, repeat until the
queue is empty. One task run per batch of several hundred rows, never one per item. The
`now` parameter sets the clock (tests use it instead of sleeping); by default it is the time
of each batch.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.blocks.core import Block
from prefect.cache_policies import NO_CACHE

from blocks.smtp import SmtpServer
from blocks.targets import open_transport
from flows.jobs import job_slot
from opsflow.claim import claimer_name
from opsflow.delivery import client, notify, packages, tips
from opsflow.delivery.outbox import MailPolicy, SendReport, due_count, send_batch
from opsflow.delivery.smtp import SmtpUnavailable
from opsflow.settings import get_settings
from opsflow.store import sessions
from opsflow.transports.base import Transport
from opsflow.transports.local import LocalTransport

SMTP_BLOCK = "opsflow-smtp"


def _store(database_url: str | None) -> str:
    return database_url or get_settings().database_url


def _summary(key: str, title: str, figures: dict[str, Any]) -> None:
    rows = [{"what": name, "count": value} for name, value in figures.items()
            if name != "errors"]
    create_table_artifact(key=key, table=rows, description=title)


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
        url, claimer = _store(database_url), claimer_name("create_tips:")
        submissions = created = 0
        while True:
            claimed, made = create_tips_batch(url, claimer, batch_size, now)
            submissions, created = submissions + claimed, created + made
            if claimed < batch_size:
                break
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
        url, claimer = _store(database_url), claimer_name("notify_receivers:")
        tips_seen = queued = 0
        while True:
            claimed, made = queue_tip_mails_batch(url, claimer, batch_size, digest_window_s, now)
            tips_seen, queued = tips_seen + claimed, queued + made
            if claimed < batch_size:
                break
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


@flow(retries=1, retry_delay_seconds=60)
def send_mail(database_url: str | None = None, smtp_block: str = SMTP_BLOCK,
              batch_size: int = 500, max_attempts: int = 8, backoff_base_s: float = 60,
              backoff_max_s: float = 6 * 3600, hourly_limit: int = 100,
              now: datetime | None = None) -> dict[str, int]:
    """Drain the outgoing mail queue, one SMTP connection per batch.

    Retries back off per mail; a server that is down ends the batch, with every mail in it
    counted and delayed, rather than stalling the queue.
    """
    with job_slot():
        url, claimer = _store(database_url), claimer_name("send_mail:")
        policy = MailPolicy(max_attempts=max_attempts, hourly_limit=hourly_limit,
                            backoff_base=timedelta(seconds=backoff_base_s),
                            backoff_max=timedelta(seconds=backoff_max_s))
        with sessions(url)() as session:
            ahead = due_count(session, now)
        progress = create_progress_artifact(0.0, key="send-mail-progress",
                                            description=f"{ahead} mails due at the start")
        total = SendReport()
        while True:
            report = send_mail_batch(url, smtp_block, claimer, batch_size, policy, now)
            total.add(report)
            update_progress_artifact(progress, min(100.0, 100.0 * total.claimed / max(ahead, 1)))
            if report.server_down:  # the rest waits for the next run instead of timing out here
                get_run_logger().warning("SMTP server unreachable; the rest waits for the next run")
                break
            if report.claimed < batch_size:
                break
        figures = {k: int(v) for k, v in vars(total).items() if k != "errors"}
        _summary("send-mail", "Outgoing mail: this run", figures)
        get_run_logger().info("mail: %s", figures)
        return figures


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
        url, claimer = _store(database_url), claimer_name("deliver_files:")
        folder = package_folder or str(get_settings().data_dir / "packages")
        policy = packages.DeliveryPolicy(max_attempts=max_attempts)
        total = packages.DeliveryReport()
        while True:
            report = deliver_files_batch(url, claimer, batch_size, folder, target_block,
                                         target_folder, policy, now)
            total.add(report)
            if report.claimed < batch_size:
                break
        figures = {k: v for k, v in vars(total).items() if k != "errors"}
        _summary("deliver-files", "File delivery: this run", figures)
        return figures


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
        url, claimer = _store(database_url), claimer_name("deliver_notifications:")
        totals = {"events": 0, "delivered": 0, "waiting": 0, "removed": 0}
        try:
            while True:
                report = deliver_notifications_batch(url, claimer, batch_size, now)
                for name in totals:
                    totals[name] += getattr(report, name)
                if report.events < batch_size:
                    break
        finally:
            with sessions(url)() as session:
                notify.release_waiting(session, claimer=claimer)
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


@flow(retries=2, retry_delay_seconds=300)
def deliver_client_notifications(database_url: str | None = None,
                                 smtp_block: str = SMTP_BLOCK, batch_size: int = 200,
                                 on_unreachable: Literal["stop", "drop"] = "stop",
                                 now: datetime | None = None) -> dict[str, int]:
    """Client notifications (whole EML messages) over SMTP; each is removed once tried.

    `on_unreachable`: "stop" fails the run when the SMTP server cannot be reached (the
    messages stay for the retry), "drop" logs each one undeliverable and removes it."""
    with job_slot():
        url, claimer = _store(database_url), claimer_name("deliver_client_notifications:")
        totals = {"sent": 0, "dropped": 0}
        while True:
            try:
                report = deliver_client_notifications_batch(url, smtp_block, claimer, batch_size,
                                                            on_unreachable, now)
            except SmtpUnavailable as exc:
                get_run_logger().error("SMTP server unreachable, stopping: %s", exc)
                raise
            totals["sent"] += report.sent
            totals["dropped"] += report.dropped
            if report.claimed < batch_size:
                break
        return totals
