"""Scale-out end to end on the local PostgreSQL: a Prefect server on PostgreSQL, the record
store on PostgreSQL, the deployments applied from prefect.yaml with `prefect deploy --all`,
and two `prefect worker start` processes on the process pool.

Folder syncs and mail sending go through the workers at the same time, several flow runs of
each kind on the shared queues (the sync action queue, the mail outbox): every file arrives,
every mail is sent exactly once, and both workers take part.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from deployments.definitions import DEPLOYMENTS
from opsflow.delivery.records import MailStatus, OutgoingMail
from opsflow.mail.outbox import enqueue, message_id
from opsflow.store import session_scope, sessions
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


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory,
            postgres_database: PostgresDatabase) -> Iterator[ScaleOut]:
    with scaled_out(tmp_path_factory.mktemp("scaleout"), postgres_database.url,
                    postgres_database.admin_url, workers=WORKERS, limit=WORKER_LIMIT) as c:
        yield c


def queue_mails(url: str, count: int) -> set[str]:
    """`count` mails, one per recipient (no hourly limit in the way); their Message-IDs."""
    with session_scope(url) as session:
        enqueue(session, [{"key": f"scaleout:{i}", "recipient": f"r{i}@example.org",
                           "subject": f"Mail {i}", "body": "Hello.\n"} for i in range(count)])
    return {message_id(f"scaleout:{i}", "example.org") for i in range(count)}


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

    with smtp.handler.lock:
        got = Counter(str(m["Message-ID"]) for m in smtp.handler.messages)
    assert set(got) == expected_ids, "every queued mail arrived"
    assert max(got.values()) == 1, f"sent twice: {[m for m, n in got.items() if n > 1]}"
    with sessions(postgres_url)() as session:
        assert Counter(session.scalars(select(OutgoingMail.status))) == {MailStatus.SENT: MAILS}

    by_worker = cluster.flow_runs_by_worker()
    assert set(by_worker) == set(WORKERS), f"not both workers ran flow runs: {by_worker}"
    assert set().union(*by_worker.values()) >= set(run_ids)
    assert not set.intersection(*by_worker.values()), "a flow run was submitted twice"
