"""Scale-out end to end on the local PostgreSQL: a Prefect server on PostgreSQL, the record
store on PostgreSQL, the deployments applied from prefect.yaml with `prefect deploy --all`,
and two `prefect worker start` processes on the process pool.

Folder syncs and mail sending go through the workers at the same time, several flow runs of
each kind on the shared queues (the sync action queue, the mail outbox): every file arrives,
every mail is sent exactly once, and both workers take part. With `opsflow sensors work`
beside them and every safety-net schedule paused, finalized submissions and queued mails
wake their deployments through the shared server's triggers alone, and each mail goes out once.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import select

from deployments.definitions import DEPLOYMENTS
from opsflow.delivery import seed
from opsflow.delivery.records import (
    MailStatus,
    Notification,
    OutgoingMail,
    Receiver,
    ReceiverTip,
)
from opsflow.mail.outbox import enqueue, message_id
from opsflow.store import session_scope, sessions
from sensors.work import KINDS
from tests.support.scaleout import ScaleOut, scaled_out
from tests.support.servers import PostgresDatabase, SmtpServer
from tests.sync_support import tree, write

pytestmark = pytest.mark.slow

WORKERS = ("worker-a", "worker-b")
# Each worker runs at most this many flow runs at once, like a small machine; with more runs
# submitted than one worker takes, the other worker must take part.
WORKER_LIMIT = 3
MAPPINGS = ("scale-one", "scale-two")
FILES_PER_MAPPING = 60
MAILS = 240
MAIL_RUNS = 4
FROM = "opsflow@example.org"
DOMAIN = "example.org"  # of FROM: the Message-IDs' domain
# The work sensor's test: submissions and plain mails in two waves, the second while the
# first one's runs are under way.
RECEIVERS = 4
RECEIVER_DOMAIN = "receivers.example"
SUBMISSION_WAVES = (3, 2)  # finalized submissions, each chosen for every receiver
PLAIN_WAVES = (40, 40)
RECORD_DRIVEN = tuple(kind.deployment for kind in KINDS)
CHAIN = ("create-tips", "notify-receivers", "send-mail")
# Bound of each wait of that test: sensor 1.5 s + worker poll 1 s + a flow-run process start
# per hop (three hops to a receiver's mail), and the sensor's 60 s re-wake for work that came
# while a run was finishing; a few minutes on a loaded 2-core machine.
WAIT = 240.0

T = TypeVar("T")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory,
            postgres_database: PostgresDatabase) -> Iterator[ScaleOut]:
    with scaled_out(tmp_path_factory.mktemp("scaleout"), postgres_database.url,
                    postgres_database.admin_url, workers=WORKERS, limit=WORKER_LIMIT) as c:
        yield c


def queue_mails(url: str, count: int, prefix: str = "scaleout") -> set[str]:
    """`count` mails, one per recipient (no hourly limit in the way); their Message-IDs."""
    with session_scope(url) as session:
        enqueue(session, [{"key": f"{prefix}:{i}", "recipient": f"{prefix}{i}@example.org",
                           "subject": f"Mail {i}", "body": "Hello.\n"} for i in range(count)])
    return {message_id(f"{prefix}:{i}", DOMAIN) for i in range(count)}


def wait_until(what: str, check: Callable[[], T | None], timeout: float = WAIT,
               details: Callable[[], str] = lambda: "") -> T:
    """`check()` until it returns something true; a failure naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout:.0f} s for {what}\n{details()}", pytrace=False)
        time.sleep(1.0)


def received(smtp: SmtpServer) -> Counter[str]:
    with smtp.handler.lock:
        return Counter(str(m["Message-ID"]) for m in smtp.handler.messages)


def received_by(smtp: SmtpServer, domain: str) -> Counter[str]:
    """How many mails each recipient of `domain` got."""
    with smtp.handler.lock:
        return Counter(str(m["To"]) for m in smtp.handler.messages
                       if str(m["To"]).endswith(f"@{domain}"))


def test_deploy_all_applies_every_deployment_of_prefect_yaml_to_the_pool(
        cluster: ScaleOut) -> None:
    from prefect.client.orchestration import get_client

    with cluster.as_client(), get_client(sync_client=True) as client:
        applied = {d.name: d for d in client.read_deployments()}
    assert set(applied) == {spec.name for spec in DEPLOYMENTS}
    for spec in DEPLOYMENTS:
        deployment = applied[spec.name]
        assert deployment.work_pool_name == "opsflow-pool"
        assert deployment.pull_steps == [{"prefect.deployments.steps.set_working_directory": {
            "directory": "{{ $OPSFLOW_PROJECT_DIR }}"}}]
        assert len(deployment.schedules) == len(spec.schedules())
        assert deployment.parameters == spec.parameters


def test_sync_and_mail_through_two_workers_at_once(cluster: ScaleOut, postgres_url: str,
                                                   smtp: SmtpServer, tmp_path: Path) -> None:
    from prefect.deployments import run_deployment

    from blocks.local_folder import LocalFolder
    from blocks.smtp import SmtpServer as SmtpBlock
    from blocks.sync_mapping import SyncMapping

    folders = {name: (tmp_path / name / "local", tmp_path / name / "remote")
               for name in MAPPINGS}
    for local, remote in folders.values():
        remote.mkdir(parents=True)
        for i in range(FILES_PER_MAPPING):
            write(local, f"d{i % 5}/file-{i}.txt", f"{local.parent.name} {i}\n" * (i + 1))
    expected_ids = queue_mails(postgres_url, MAILS)

    with cluster.as_client():
        SmtpBlock(host="127.0.0.1", port=smtp.port, from_address=FROM).save(
            "opsflow-smtp", overwrite=True)
        for name, (local, remote) in folders.items():
            SyncMapping(local_folder=str(local), target=LocalFolder(path=str(remote)),
                        complete_sync=True).save(name, overwrite=True)
        # Interleaved, two runs per mapping (the second finds the first's drain, or an empty
        # queue) and several senders on the one outbox.
        submissions = []
        for round_ in range(max(2, MAIL_RUNS)):
            if round_ < 2:
                submissions += [("sync-folder/sync-folder", {"mapping": name, "linger": 0.5})
                                for name in MAPPINGS]
            if round_ < MAIL_RUNS:
                submissions.append(("send-mail/send-mail", {"batch_size": 20}))
        runs = [run_deployment(name, parameters=parameters, timeout=0)
                for name, parameters in submissions]
    run_ids = [str(run.id) for run in runs]

    states = cluster.wait_for_flow_runs(run_ids, timeout=420)
    # One active run per deployment (send-mail: CANCEL_NEW): a sender that comes while
    # another sends is cancelled at once; the one that runs drains the whole outbox.
    mail_ids = {str(run.id) for run, (name, _) in zip(runs, submissions, strict=True)
                if name.startswith("send-mail/")}
    assert {states[i] for i in set(run_ids) - mail_ids} == {"Completed"}, (
        f"{states}\n{cluster.worker_logs()}")
    assert {states[i] for i in mail_ids} <= {"Completed", "Cancelled"}, states
    assert "Completed" in {states[i] for i in mail_ids}, states
    run_ids = [i for i in run_ids if states[i] == "Completed"]

    for name, (local, remote) in folders.items():
        assert tree(remote) == tree(local), f"{name}: not every file arrived"
        assert len(tree(remote)) == FILES_PER_MAPPING

    got = received(smtp)
    assert set(got) == expected_ids, "every queued mail arrived"
    assert max(got.values()) == 1, f"sent twice: {[m for m, n in got.items() if n > 1]}"
    with sessions(postgres_url)() as session:
        assert Counter(session.scalars(select(OutgoingMail.status))) == {MailStatus.SENT: MAILS}

    by_worker = cluster.flow_runs_by_worker()
    assert set(by_worker) == set(WORKERS), f"not both workers ran flow runs: {by_worker}"
    assert set().union(*by_worker.values()) >= set(run_ids)
    assert not set.intersection(*by_worker.values()), "a flow run was submitted twice"


def pause_schedules(client: Any, deployment_ids: list[Any]) -> list[tuple[Any, Any]]:
    """Every active schedule of these deployments paused, and the runs the scheduler made
    ahead deleted: whatever runs now, a trigger started. Returns what to resume."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    paused = []
    for deployment_id in deployment_ids:
        for schedule in client.read_deployment_schedules(deployment_id):
            if schedule.active:
                client.update_deployment_schedule(deployment_id, schedule.id, active=False)
                paused.append((deployment_id, schedule.id))
    ahead = client.read_flow_runs(limit=200, flow_run_filter=FlowRunFilter(
        deployment_id=FlowRunFilterDeploymentId(any_=deployment_ids),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))))
    for run in ahead:
        if run.auto_scheduled:
            client.delete_flow_run(run.id)
    return paused


def test_the_work_sensor_wakes_the_record_driven_deployments_on_the_workers(
        cluster: ScaleOut, postgres_url: str, smtp: SmtpServer) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId

    from blocks.smtp import SmtpServer as SmtpBlock

    with cluster.as_client(), get_client(sync_client=True) as client:
        SmtpBlock(host="127.0.0.1", port=smtp.port, from_address=FROM).save(
            "opsflow-smtp", overwrite=True)
        names = {d.id: d.name for d in client.read_deployments() if d.name in RECORD_DRIVEN}
        assert set(names.values()) == set(RECORD_DRIVEN)
        paused = pause_schedules(client, list(names))
        automations = {a.id: a for a in client.read_automations()}

    def runs_since(since: datetime) -> list[Any]:
        with cluster.as_client(), get_client(sync_client=True) as client:
            return [r for r in client.read_flow_runs(limit=200, flow_run_filter=FlowRunFilter(
                deployment_id=FlowRunFilterDeploymentId(any_=list(names))))
                if r.created and r.created >= since]

    def nothing_due() -> bool:
        now = datetime.now(UTC)
        with sessions(postgres_url)() as session:
            return not any(kind.count(session, now) for kind in KINDS)

    def details() -> str:
        runs = [(names[r.deployment_id], r.state.name if r.state else "?")
                for r in runs_since(since)]
        return (f"received {sum(received(smtp).values())} mails; runs since the sensor: "
                f"{sorted(Counter(runs).items())}\n{cluster.sensor_log()}\n{cluster.worker_logs()}")

    submissions = sum(SUBMISSION_WAVES)
    since = datetime.now(UTC)
    began = time.monotonic()
    try:
        cluster.start_work_sensor()
        with session_scope(postgres_url) as session:
            receivers = seed.add_receivers(session, RECEIVERS, domain=RECEIVER_DOMAIN)
            seed.add_submissions(session, SUBMISSION_WAVES[0], receivers)
        plain = queue_mails(postgres_url, PLAIN_WAVES[0], prefix="plain-a")
        wait_until("a first receiver mail at the SMTP server (create-tips, notify-receivers "
                   "and send-mail, each woken by the work sensor's event)",
                   lambda: received_by(smtp, RECEIVER_DOMAIN), details=details)
        first_mail = time.monotonic() - began
        # The second wave comes while runs of the first may still be under way.
        with session_scope(postgres_url) as session:
            seed.add_submissions(session, SUBMISSION_WAVES[1], receivers)
        plain |= queue_mails(postgres_url, PLAIN_WAVES[1], prefix="plain-b")

        def all_arrived() -> bool:
            by_receiver = received_by(smtp, RECEIVER_DOMAIN)
            return (sum(by_receiver.values()) >= RECEIVERS * submissions
                    and plain <= set(received(smtp)))

        wait_until(f"{submissions} mails to each of {RECEIVERS} receivers and "
                   f"{len(plain)} plain mails", all_arrived, details=details)
        all_mail = time.monotonic() - began

        # Settled: nothing due in the store (the sensor has nothing left to wake) and every
        # run since the sensor started has ended, with no new one for a few seconds.
        seen: list[frozenset[str]] = []

        def settled() -> list[Any]:
            runs = runs_since(since)
            ids = frozenset(str(r.id) for r in runs)
            final = all(r.state and r.state.is_final() for r in runs) and nothing_due()
            seen.append(ids if final else frozenset({"not settled"}))
            return runs if final and len(seen) >= 5 and len(set(seen[-5:])) == 1 else []

        runs = wait_until("every run of a record-driven deployment to end, nothing due left",
                          settled, details=details)
        # Nothing of a record-driven deployment is left waiting (before the schedules are
        # resumed and make their next runs).
        with cluster.as_client(), get_client(sync_client=True) as client:
            left = [r for r in client.read_flow_runs(limit=200, flow_run_filter=FlowRunFilter(
                deployment_id=FlowRunFilterDeploymentId(any_=list(names))))
                if r.state and not r.state.is_final()]
        assert not left, [(names[r.deployment_id], r.name, r.state.name) for r in left]
    finally:
        cluster.stop_sensor()
        with cluster.as_client(), get_client(sync_client=True) as client:
            for deployment_id, schedule_id in paused:
                client.update_deployment_schedule(deployment_id, schedule_id, active=True)

    # Every mail once: each receiver's, and each plain one.
    with sessions(postgres_url)() as session:
        tips = session.scalars(select(ReceiverTip)).all()
        addresses = session.scalars(select(Receiver.address)).all()
        statuses = Counter(session.scalars(select(OutgoingMail.status)))
    assert len(tips) == RECEIVERS * submissions
    assert {t.notification for t in tips} == {Notification.NOTIFIED}
    expected = {message_id(t.mail_key, DOMAIN) for t in tips if t.mail_key} | plain
    got = received(smtp)
    assert set(got) == expected, "every receiver's and every plain mail arrived"
    assert max(got.values()) == 1, f"sent twice: {[m for m, n in got.items() if n > 1]}"
    assert received_by(smtp, RECEIVER_DOMAIN) == Counter(dict.fromkeys(addresses, submissions))
    assert statuses == {MailStatus.SENT: len(expected)}

    # Every run was started by its deployment's trigger on the sensor's event, not by a
    # schedule, and none waits: each one ran or was skipped at once (CANCEL_NEW).
    by_name: dict[str, list[Any]] = {}
    for run in runs:
        by_name.setdefault(names[run.deployment_id], []).append(run)
        assert not run.auto_scheduled, f"a schedule started {run.name}"
        assert run.created_by is not None and run.created_by.type == "AUTOMATION", (
            f"{run.name} of {names[run.deployment_id]} not started by an automation: "
            f"{run.created_by}")
        automation = automations[run.created_by.id]
        assert [getattr(a, "deployment_id", None) for a in automation.actions] == [
            run.deployment_id], automation
        assert "opsflow.work.due" in automation.trigger.expect, automation.trigger
        assert run.state.name in ("Completed", "Cancelled"), f"{run.name}: {run.state}"
        if run.state.name == "Cancelled":
            assert "concurrency limit" in (run.state.message or "").lower(), run.state
    for name in CHAIN:
        assert any(r.state.name == "Completed" for r in by_name.get(name, [])), (
            f"no completed run of {name}: {by_name.get(name)}")
    completed = {str(r.id) for r in runs if r.state.name == "Completed"}
    by_worker = cluster.flow_runs_by_worker()
    assert completed <= set().union(*by_worker.values()), "a run did not run on a worker"
    assert not set.intersection(*by_worker.values()), "a flow run was submitted twice"

    print(f"work sensor: first receiver mail after {first_mail:.1f} s, all "
          f"{len(expected)} mails after {all_mail:.1f} s; runs "
          f"{ {n: Counter(r.state.name for r in rs) for n, rs in sorted(by_name.items())} }")
