"""Maintenance flows: Prefect is the generator, and these keep its house in order.

`sweep_flow_runs` is AyaNova's operation sweeper: succeeded operations go after 24 h, failed
ones after two weeks. The rules are in `opsflow.retention`; this module applies them through
the Prefect API, a batch of runs per task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.artifacts import acreate_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterEndTime,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import ArtifactSort, FlowRunSort
from prefect.events import emit_event
from prefect.exceptions import ObjectNotFound

from flows.jobs import job_slot, refuse_if_locked
from flows.reporting import Progress, progress, report_markdown, report_table, row
from opsflow.claim import until_short_batch
from opsflow.mail.outbox import MailPolicy
from opsflow.maintenance.cleaning import EXPIRED, UNFINISHED, erase_batch, expired, unfinished
from opsflow.maintenance.erase import Erased
from opsflow.maintenance.mail_sweep import (
    WATCHED,
    StuckPolicy,
    StuckReport,
    current_problems,
    delete_sent_mails,
    sweep_stuck,
)
from opsflow.maintenance.ops_alerts import report_changes
from opsflow.maintenance.orphans import (
    FileCheck,
    OrphanOutcome,
    check_files,
    clear_orphans,
    references,
    remove_unreferenced,
)
from opsflow.maintenance.reminders import StepWindow, queue_reminders, step_windows
from opsflow.maintenance.statistics import complete_timeframes, record_timeframe, timeframe_start
from opsflow.maintenance.vacuum import upkeep
from opsflow.retention import Cutoff, retention_cutoffs
from opsflow.settings import get_settings, normalize_steps
from opsflow.store import get_engine, session_scope, sessions, store_url, utcnow

# The API reads at most 200 flow runs per request, and bulk-deletes at most 50.
MAX_BATCH = 200
BULK_LIMIT = 50


@dataclass
class BatchOutcome:
    """What one batch did: runs and artifacts deleted, runs that could not be deleted."""

    runs_deleted: int = 0
    artifacts_deleted: int = 0
    failed: dict[UUID, str] = field(default_factory=dict)


async def _bounded(
    calls: Iterable[Callable[[], Awaitable[object]]], concurrency: int
) -> list[object | BaseException]:
    """Run the calls at most `concurrency` at a time; exceptions come back as results."""
    gate = asyncio.Semaphore(concurrency)

    async def one(call: Callable[[], Awaitable[object]]) -> object:
        async with gate:
            return await call()

    return await asyncio.gather(*(one(c) for c in calls), return_exceptions=True)


async def _artifact_ids_of(client: PrefectClient, run_ids: list[UUID]) -> list[UUID]:
    """Every artifact of these runs (task-run artifacts carry their flow run's id too).

    Posted by hand: `read_artifacts` sends null for the filters left out, which the 3.8.8
    server under FastAPI 0.154 refuses (422), and an empty filter instead would mean "only
    artifacts of some task run"."""
    found: list[UUID] = []
    while True:
        response = await client.request(
            "POST",
            "/artifacts/filter",
            json={
                "artifacts": {"flow_run_id": {"any_": [str(r) for r in run_ids]}},
                "sort": ArtifactSort.ID_DESC.value,
                "limit": MAX_BATCH,
                "offset": len(found),
            },
        )
        response.raise_for_status()
        page = [UUID(a["id"]) for a in response.json()]
        found.extend(page)
        if len(page) < MAX_BATCH:
            return found


async def _delete_run(client: PrefectClient, run_id: UUID) -> None:
    try:
        await client.delete_flow_run(run_id)
    except ObjectNotFound:
        pass  # gone already (another sweep, or a user in the UI): the goal is met


async def _bulk_delete(client: PrefectClient, run_ids: list[UUID]) -> set[UUID]:
    """Delete runs through the server's `POST /flow_runs/bulk_delete` (at most 50 per call,
    one transaction each; the 3.8.8 client has no method for it). Faster than
    `delete_flow_run` per run on SQLite, where concurrent deletes only wait on each other's
    locks: the whole flow took 1.5x less time than one-by-one deletes over 5,000 runs
    (bench/sweep_flow_runs.py, loaded machine). Returns the ids the server deleted."""
    deleted: set[UUID] = set()
    for start in range(0, len(run_ids), BULK_LIMIT):
        chunk = run_ids[start:start + BULK_LIMIT]
        response = await client.request(
            "POST",
            "/flow_runs/bulk_delete",
            json={"flow_runs": {"id": {"any_": [str(r) for r in chunk]}}, "limit": len(chunk)},
        )
        response.raise_for_status()
        deleted.update(UUID(r) for r in response.json()["deleted"])
    return deleted


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
async def delete_runs(run_ids: list[UUID], concurrency: int) -> BatchOutcome:
    """Delete one batch of flow runs with their artifacts (`concurrency` deletes at a time).

    Artifacts first: they are found by their run's id, so once the run is gone an interrupted
    sweep could no longer find them. Task runs go with the flow run (a cascading foreign
    key); logs are deleted by the Prefect server itself in the background once their run is
    gone (`delete_flow_run_logs` in prefect/server/api/flow_runs.py); artifacts have no
    foreign key and would stay behind.
    """
    outcome = BatchOutcome()
    async with get_client() as client:
        artifact_ids = await _artifact_ids_of(client, run_ids)
        results = await _bounded(
            [lambda a=a: client.delete_artifact(a) for a in artifact_ids], concurrency
        )
        failed_artifacts = [r for r in results if isinstance(r, BaseException)]
        outcome.artifacts_deleted = len(results) - len(failed_artifacts)
        if failed_artifacts:
            # Keep the runs so that their artifacts stay findable for the next sweep.
            for run_id in run_ids:
                outcome.failed[run_id] = f"artifact delete failed: {failed_artifacts[0]}"
            return outcome
        deleted = await _bulk_delete(client, run_ids)
        # Not deleted in bulk: gone already, or refused; one by one tells which.
        rest = [r for r in run_ids if r not in deleted]
        results = await _bounded([lambda r=r: _delete_run(client, r) for r in rest], concurrency)
    outcome.runs_deleted = len(deleted)
    for run_id, result in zip(rest, results, strict=True):
        if isinstance(result, BaseException):
            outcome.failed[run_id] = str(result) or type(result).__name__
        else:
            outcome.runs_deleted += 1
    return outcome


def _expired_filter(cutoff: Cutoff, skip: list[UUID]) -> FlowRunFilter:
    return FlowRunFilter(
        state=FlowRunFilterState(
            type=FlowRunFilterStateType(any_=[StateType(t) for t in cutoff.state_types])
        ),
        # The server sets end_time to the timestamp of the terminal state.
        end_time=FlowRunFilterEndTime(before_=cutoff.ended_before),
        id=FlowRunFilterId(not_any_=skip) if skip else None,
    )


async def _expired_count(cutoffs: Iterable[Cutoff]) -> int:
    async with get_client() as client:
        counts = [await client.count_flow_runs(flow_run_filter=_expired_filter(cutoff, []))
                  for cutoff in cutoffs]
    return sum(counts)


async def _expired_run_ids(cutoff: Cutoff, skip: list[UUID], limit: int) -> list[UUID]:
    run_filter = _expired_filter(cutoff, skip)
    async with get_client() as client:
        # sort given: the server refuses the client's default null (see _artifact_ids_of).
        runs = await client.read_flow_runs(
            flow_run_filter=run_filter, sort=FlowRunSort.ID_DESC, limit=limit
        )
    return [r.id for r in runs]


async def _sweep_cutoff(cutoff: Cutoff, failed: dict[UUID, str], batch_size: int,
                        concurrency: int, deleting: Progress) -> dict[str, object]:
    """Delete the runs past one cut-off, a batch at a time; returns its row of the table."""
    total = BatchOutcome()
    while run_ids := await _expired_run_ids(cutoff, list(failed), batch_size):
        outcome = await delete_runs(run_ids, concurrency)
        total.runs_deleted += outcome.runs_deleted
        total.artifacts_deleted += outcome.artifacts_deleted
        total.failed.update(outcome.failed)
        failed.update(outcome.failed)
        deleting.advance(len(run_ids))
    get_run_logger().info(
        "%s runs ended before %s: %d deleted, %d artifacts, %d failed",
        cutoff.label, cutoff.ended_before.isoformat(), total.runs_deleted,
        total.artifacts_deleted, len(total.failed),
    )
    return {
        "states": cutoff.label,
        "ended before": cutoff.ended_before.isoformat(timespec="seconds"),
        "runs deleted": total.runs_deleted,
        "artifacts deleted": total.artifacts_deleted,
        "failed": len(total.failed),
    }


@flow(name="sweep-flow-runs", log_prints=True)
async def sweep_flow_runs(
    completed_hours: float | None = None,
    failed_days: float | None = None,
    batch_size: int = MAX_BATCH,
    concurrency: int = 8,
) -> dict[str, int]:
    """Delete Completed flow runs older than `completed_hours` and Failed or Crashed ones older
    than `failed_days` (defaults: OPSFLOW_RETENTION_COMPLETED_HOURS and
    OPSFLOW_RETENTION_FAILED_DAYS), with their task runs, logs and artifacts.

    It takes no job slot (it only cleans Prefect), but the API lock refuses it like any run
    started around the lock; its schedule goes on."""
    # In a thread: the lock check is synchronous, and the thread keeps this run's context.
    await asyncio.to_thread(refuse_if_locked)
    settings = get_settings()
    cutoffs = retention_cutoffs(
        datetime.now(UTC),
        completed_hours=settings.retention_completed_hours if completed_hours is None else completed_hours,
        failed_days=settings.retention_failed_days if failed_days is None else failed_days,
    )
    if not 1 <= batch_size <= MAX_BATCH:
        raise ValueError(f"batch_size must be between 1 and {MAX_BATCH}, got {batch_size}")
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")

    rows: list[dict[str, object]] = []
    failed: dict[UUID, str] = {}
    with progress("sweep-flow-runs-progress", "expired flow runs",
                  await _expired_count(cutoffs)) as deleting:
        for cutoff in cutoffs:
            rows.append(await _sweep_cutoff(cutoff, failed, batch_size, concurrency, deleting))

    await acreate_table_artifact(
        table=rows, key="sweep-flow-runs", description="Flow runs deleted by retention"
    )
    if failed:
        run_id, reason = next(iter(failed.items()))
        raise RuntimeError(f"{len(failed)} flow runs could not be deleted, e.g. {run_id}: {reason}")
    return {str(r["states"]): int(r["runs deleted"]) for r in rows}  # type: ignore[call-overload]


# --- the record store's housekeeping (seeds 000 and 002) --------------------------------------
#
# Each flow below is a list of steps over the record store; each step runs a task per batch
# until its batch comes back short. The `now` parameter sets the clock (tests move it instead
# of waiting); by default it is the time the run starts.

def _warn(errors: list[str]) -> None:
    logger = get_run_logger()
    for error in errors[:10]:
        logger.warning("%s", error)


# --- clean_expired ---------------------------------------------------------------------------

@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def queue_reminders_batch(database_url: str, window: StepWindow, now: datetime,
                          batch_size: int) -> tuple[int, int]:
    """Queue one batch of expiry reminders at one step: (found, queued)."""
    with sessions(database_url)() as session:
        return queue_reminders(session, window, now=now, limit=batch_size)


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def erase_submissions_batch(database_url: str, reason: str, batch_size: int, now: datetime,
                            unfinished_after: timedelta, skip: list[int]) -> tuple[int, Erased]:
    """Erase one batch of expired or unfinished submissions with their tips and files."""
    where = expired(now) if reason == EXPIRED else unfinished(now, unfinished_after)
    with sessions(database_url)() as session:
        found, erased = erase_batch(session, where, reason, limit=batch_size, now=now, skip=skip)
    _warn(erased.errors)
    return found, erased


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def delete_sent_mails_batch(database_url: str, before: datetime, batch_size: int,
                            reason: str) -> int:
    """Delete one batch of mails sent before `before`, each audited."""
    with sessions(database_url)() as session:
        return delete_sent_mails(session, before, limit=batch_size, reason=reason)


def _drain_sent_mails(url: str, before: datetime, batch_size: int, reason: str) -> int:
    return sum(until_short_batch(
        lambda: delete_sent_mails_batch(url, before, batch_size, reason), batch_size,
        taken=lambda found: found))


@flow(name="clean-expired", retries=1, retry_delay_seconds=60)
def clean_expired(database_url: str | None = None, batch_size: int = 200,
                  reminder_days: list[int] | None = None,
                  unfinished_hours: float | None = None, sent_mail_days: float | None = None,
                  now: datetime | None = None) -> dict[str, int]:
    """GlobaLeaks' cleaning: remind receivers before their submissions expire, then delete
    expired submissions and unfinished ones with their tips and files (files overwritten
    first), and sent mails past their retention; every deletion audited.

    Defaults: OPSFLOW_EXPIRY_REMINDER_DAYS (28,14,7,3), OPSFLOW_UNFINISHED_SUBMISSION_HOURS
    (24), OPSFLOW_SENT_MAIL_RETENTION_DAYS (14). Each batch is its own transaction: a run
    killed at any point is finished by the next one.
    """
    settings = get_settings()
    url, now = store_url(database_url), now or utcnow()
    steps = normalize_steps(reminder_days if reminder_days is not None
                            else settings.expiry_reminder_days)
    unfinished_after = timedelta(hours=unfinished_hours or settings.unfinished_submission_hours)
    mails_before = now - timedelta(days=sent_mail_days or settings.sent_mail_retention_days)
    rows: list[dict[str, object]] = []
    figures: dict[str, int] = {}
    with job_slot(), progress("clean-expired-progress", "cleaning steps", 4) as stepping:
        try:
            reminded = raced = 0
            for window in step_windows(steps, now):
                for found, queued in until_short_batch(
                        partial(queue_reminders_batch, url, window, now, batch_size),
                        batch_size, taken=lambda result: result[0]):
                    reminded, raced = reminded + queued, raced + found - queued
            rows.append(row("expiry reminders queued", reminded, raced,
                            note=f"steps {', '.join(map(str, steps))} days; skipped: another run"))
            figures["reminders"] = reminded
            stepping.advance()

            for reason in (EXPIRED, UNFINISHED):
                total, skip = Erased(), []
                for _found, erased in until_short_batch(
                        partial(erase_submissions_batch, url, reason, batch_size, now,
                                unfinished_after, skip),
                        batch_size, taken=lambda result: result[0]):
                    total.add(erased)
                    skip.extend(erased.kept)
                rows.append(row(f"{reason} submissions deleted", total.submissions,
                                failed=len(total.kept),
                                note=f"{total.tips} tips, {total.files} files; "
                                      f"{total.files_overwritten} stored files overwritten, "
                                      f"{total.files_already_gone} gone already"))
                figures[f"{reason}_submissions"] = total.submissions
                figures[f"{reason}_failed"] = len(total.kept)
                stepping.advance()

            figures["sent_mails"] = _drain_sent_mails(url, mails_before, batch_size,
                                                      "sent mail retention")
            rows.append(row("sent mails deleted", figures["sent_mails"],
                            note=f"sent before {mails_before.isoformat(timespec='minutes')}"))
            stepping.advance()
        finally:  # what was done before a failure stays on the run page
            report_table("clean-expired", "Cleaning: reminders and deletions of this run", rows)
    get_run_logger().info("cleaning: %s", figures)
    failed = figures["expired_failed"] + figures["unfinished_failed"]
    if failed:
        raise RuntimeError(f"{failed} submission(s) kept because a stored file could not be "
                           "overwritten and removed; see the warnings, the next run retries")
    return figures


# --- record_statistics -----------------------------------------------------------------------

STATISTICS_CHUNK = 24  # timeframes per task


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def record_statistics_batch(database_url: str, starts: list[datetime], minutes: int,
                            now: datetime) -> list[dict[str, object]]:
    """Count and upsert a batch of timeframes, in one transaction."""
    length = timedelta(minutes=minutes)
    with session_scope(database_url) as session:
        return [{"timeframe": start.isoformat(timespec="minutes"),
                 **asdict(record_timeframe(session, start, length, now=now))}
                for start in starts]


@flow(name="record-statistics", retries=1, retry_delay_seconds=60)
def record_statistics(database_url: str | None = None, timeframes: int = 3,
                      since: datetime | None = None, timeframe_minutes: int | None = None,
                      now: datetime | None = None) -> list[dict[str, object]]:
    """One statistics row per complete timeframe: the last `timeframes` of them (recounted,
    so that late records and a missed run are caught up), or every one from `since`.

    Timeframe length: OPSFLOW_STATISTICS_TIMEFRAME_MINUTES (60). A recounted timeframe's row
    is updated in place.
    """
    minutes = timeframe_minutes or get_settings().statistics_timeframe_minutes
    length, now = timedelta(minutes=minutes), now or utcnow()
    if since is not None:
        count = max(0, (timeframe_start(now, length) - timeframe_start(since, length)) // length)
    else:
        count = timeframes
    if count < 1:
        raise ValueError(f"nothing to count: timeframes={timeframes}, since={since}")
    starts = complete_timeframes(now, length, count)
    url = store_url(database_url)
    rows: list[dict[str, object]] = []
    with job_slot():
        for offset in range(0, len(starts), STATISTICS_CHUNK):
            rows.extend(record_statistics_batch(
                url, starts[offset:offset + STATISTICS_CHUNK], minutes, now))
    report_table("record-statistics", f"Statistics per {minutes}-minute timeframe", rows[-48:])
    get_run_logger().info("statistics recorded for %d timeframe(s) from %s", len(rows),
                          starts[0].isoformat())
    return rows


# --- sweep_notifications ---------------------------------------------------------------------

@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def sweep_stuck_batch(database_url: str, now: datetime, policy: StuckPolicy,
                      batch_size: int) -> StuckReport:
    """Requeue or give up on one batch of stuck mails."""
    with sessions(database_url)() as session:
        return sweep_stuck(session, now=now, policy=policy, limit=batch_size)


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def alert_ops_task(database_url: str, report: StuckReport, ops_email: str,
                   now: datetime) -> list[str]:
    """Tell OPS of the problems that are new or changed; the summaries of those told."""
    with session_scope(database_url) as session:
        problems = current_problems(session, report)
        alerted = report_changes(session, problems, WATCHED, ops_email=ops_email, now=now)
    return [p.summary for p in alerted]


OPS_ALERT_EVENT = "opsflow.ops.alert"


def announce_ops_alerts(summaries: list[str]) -> None:
    """The alerts also where no mail server is needed: an artifact in the UI (key
    `ops-alerts`) and a Prefect event an automation can forward (`opsflow.ops.alert`), since
    the alert mail goes through the same outbox whose trouble it may be reporting."""
    report_markdown("ops-alerts", f"OPS alert: {'; '.join(summaries)}",
                    "\n".join(f"- **{summary}**" for summary in summaries)
                    + "\n\nSee `opsflow mail status --failed` for the mails concerned.")
    for summary in summaries:
        emit_event(event=OPS_ALERT_EVENT, resource={"prefect.resource.id": "opsflow.outbox"},
                   payload={"summary": summary})


@flow(name="sweep-notifications", retries=1, retry_delay_seconds=60)
def sweep_notifications(database_url: str | None = None, batch_size: int = 500,
                        max_attempts: int = MailPolicy().max_attempts,
                        stuck_hours: float | None = None, sent_mail_days: float | None = None,
                        now: datetime | None = None) -> dict[str, int]:
    """AyaNova's notification sweeper: delete sent mails past retention, requeue mails whose
    sender died, give up on mails over the attempt cap or queued too long, and tell OPS of
    each distinct problem once (again only when it changes or comes back).

    Defaults: OPSFLOW_SENT_MAIL_RETENTION_DAYS (14), OPSFLOW_MAIL_STUCK_HOURS (48); alerts
    go to OPSFLOW_OPS_EMAIL through the mail outbox.
    """
    settings = get_settings()
    url, now = store_url(database_url), now or utcnow()
    policy = StuckPolicy(max_attempts=max_attempts, max_queued=timedelta(
        hours=stuck_hours or settings.mail_stuck_hours))
    mails_before = now - timedelta(days=sent_mail_days or settings.sent_mail_retention_days)
    with job_slot():
        deleted = _drain_sent_mails(url, mails_before, batch_size, "sent mail retention")
        total = StuckReport()
        for report in until_short_batch(
                lambda: sweep_stuck_batch(url, now, policy, batch_size), batch_size,
                taken=lambda report: report.found):
            total.add(report)
        alerted = alert_ops_task(url, total, settings.ops_email, now)
        if alerted:
            announce_ops_alerts(alerted)
    rows = [
        row("sent mails deleted", deleted,
            note=f"sent before {mails_before.isoformat(timespec='minutes')}"),
        row("requeued (sender's lease ran out)", total.requeued),
        row("marked undeliverable", total.undeliverable,
            note=f"cap {policy.max_attempts} attempts, queued over {policy.max_queued}"),
        row("OPS alerts queued", len(alerted), note="; ".join(alerted)),
    ]
    report_table("sweep-notifications", "Notification sweep: this run", rows)
    figures = {"sent_deleted": deleted, "requeued": total.requeued,
               "undeliverable": total.undeliverable, "alerts": len(alerted)}
    get_run_logger().info("notification sweep: %s", figures)
    return figures


# --- maintain_database -----------------------------------------------------------------------

@task(cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5)
def clear_orphans_batch(database_url: str, label: str, batch_size: int) -> OrphanOutcome:
    """Delete, unlink or count one batch of orphans of one foreign key."""
    ref = next(r for r in references() if r.label == label)
    with sessions(database_url)() as session:
        outcome = clear_orphans(session, ref, limit=batch_size)
    if outcome.erased is not None:
        _warn(outcome.erased.errors)
    return outcome


@task(cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5)
def remove_unreferenced_task(database_url: str, root: str, grace_s: float,
                             now: datetime) -> tuple[int, Erased]:
    """Overwrite and remove the files under `root` that no row points to."""
    with sessions(database_url)() as session:
        seen, erased = remove_unreferenced(session, Path(root), grace_s=grace_s, now=now)
    _warn(erased.errors)
    return seen, erased


@task(cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5)
def check_files_batch(database_url: str, after_id: int, batch_size: int,
                      now: datetime) -> FileCheck:
    """Mark one batch of submission files `missing` or `stored` again."""
    with sessions(database_url)() as session:
        return check_files(session, after_id=after_id, limit=batch_size, now=now)


@task(cache_policy=NO_CACHE)
def upkeep_task(database_url: str, vacuum: bool) -> list[tuple[str, float]]:
    """VACUUM / ANALYZE outside a transaction."""
    return upkeep(get_engine(database_url), vacuum=vacuum)


def _orphan_rows(url: str, batch_size: int) -> list[dict[str, object]]:
    rows = []
    for ref in references():
        total = OrphanOutcome()
        for outcome in until_short_batch(
                partial(clear_orphans_batch, url, ref.label, batch_size),
                batch_size, taken=lambda outcome: outcome.found):
            total.add(outcome)
            if not (outcome.deleted or outcome.unlinked):
                break  # only orphans that stay (kept, or a file would not go)
        if total.found:
            action = {"CASCADE": "deleted", "SET NULL": "reference cleared"}.get(
                ref.on_delete, "kept: no ON DELETE, for a person to decide")
            rows.append(row(f"orphans {ref.label}", total.deleted + total.unlinked,
                            skipped=total.kept, failed=total.failed, note=action))
    return rows


@flow(name="maintain-database", retries=1, retry_delay_seconds=60)
def maintain_database(database_url: str | None = None, batch_size: int = 1000,
                      storage_folders: list[str] | None = None, grace_hours: float = 1.0,
                      vacuum: bool = True, now: datetime | None = None) -> dict[str, int]:
    """AyaNova's database maintenance: remove orphaned rows (every foreign key of the schema),
    overwrite and remove stored files no row points to, mark rows whose file is gone (never
    drop them), then VACUUM / ANALYZE.

    `storage_folders`: where stored files live; default <data_dir>/submissions and
    <data_dir>/packages. Files younger than `grace_hours` are left: their rows may not be
    committed yet.
    """
    settings = get_settings()
    url, now = store_url(database_url), now or utcnow()
    folders = storage_folders or [str(settings.data_dir / "submissions"),
                                  str(settings.data_dir / "packages")]
    rows: list[dict[str, object]] = []
    check, removed = FileCheck(), 0
    with job_slot(), progress("maintain-database-progress", "maintenance steps",
                              len(folders) + 3) as stepping:
        try:
            rows.extend(_orphan_rows(url, batch_size))
            stepping.advance()
            for folder in folders:
                seen, erased = remove_unreferenced_task(url, folder, grace_hours * 3600, now)
                removed += erased.files_overwritten
                rows.append(row(f"files with no row in {folder}", erased.files_overwritten,
                                skipped=seen - erased.files_overwritten - len(erased.errors),
                                failed=len(erased.errors), note="skipped: files with a row"))
                stepping.advance()
            after = 0
            while True:  # keyset pages over every file, not a claim: `after` moves on
                batch = check_files_batch(url, after, batch_size, now)
                check.checked += batch.checked
                check.marked_missing += batch.marked_missing
                check.found_again += batch.found_again
                after = batch.last_id
                if batch.checked < batch_size:
                    break
            rows.append(row("submission files marked missing", check.marked_missing,
                            skipped=check.checked - check.marked_missing,
                            note=f"{check.found_again} found again and marked stored"))
            stepping.advance()
            for command, seconds in upkeep_task(url, vacuum):
                rows.append(row(command, 1, note=f"{seconds:.2f} s"))
            stepping.advance()
        finally:  # what was done before a failure stays on the run page
            report_table("maintain-database", "Database maintenance: this run", rows)
    orphans = sum(int(r["done"]) for r in rows if str(r["step"]).startswith("orphans"))
    figures = {"orphans": orphans, "files_removed": removed,
               "files_missing": check.marked_missing, "files_found_again": check.found_again}
    get_run_logger().info("database maintenance: %s", figures)
    failed = sum(int(r["failed"]) for r in rows)  # type: ignore[call-overload]
    if failed:
        raise RuntimeError(f"{failed} orphan(s) or stray file(s) could not be removed (a stored "
                           "file would not go); see the warnings, the next run retries")
    return figures
