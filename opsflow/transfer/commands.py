"""The experiment transfer's admin commands as plain functions: broadcast an experiment,
restart a failed one, and the catalogue and site records they need. `opsflow transfer ...`
(deployments/cli_transfer.py) parses the command line and calls these in one session.

    opsflow transfer EPN                        register EPN at every registered site
    opsflow transfer restart UID [--site S]     a failed experiment back to Ingested
    opsflow transfer catalogue EPN FOLDER --owner MAIL [--title T]
    opsflow transfer site NAME --block TYPE/NAME [--base PATH] [--admin MAIL] [--domain D]
    opsflow transfer status [UID]

Each returns the lines to print; a refusal raises `RestartRefused`, `PermanentTransferError`
or `ValueError` with a message naming what is wrong.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from opsflow.transfer.client import PermanentTransferError
from opsflow.transfer.consumer import RestartRefused
from opsflow.transfer.provider import catalogue_experiment, register_experiment
from opsflow.transfer.sites import RecordSiteManager, add_site
from opsflow.transfer.status import restart_lines, status_lines

# What a command may refuse with; the CLI shows it as one line, exit 1.
REFUSALS = (RestartRefused, PermanentTransferError, ValueError)


def broadcast(session: Session, epn: str) -> list[str]:
    synced = register_experiment(session, epn, RecordSiteManager(session), broadcast=True)
    if not synced:
        raise ValueError(f"no site is registered; EPN {epn} went nowhere")
    return [f"{row.uid} at {row.site}: {row.state}, destination {row.destination}"
            for row in synced]


def restart(session: Session, uid: str, site: str | None = None) -> list[str]:
    """Back to Ingested with a fresh catalogue: the lines say what changed."""
    return restart_lines(session, uid, site=site)


def catalogue(session: Session, epn: str, folder: str, owners: Sequence[str],
              title: str = "") -> list[str]:
    experiment = catalogue_experiment(session, epn, folder, title=title, owners=list(owners))
    return [f"EPN {experiment.epn} catalogued as {experiment.uid} from {experiment.source_root}"]


def site(session: Session, name: str, block: str, base: str = "",
         admins: Sequence[str] = (), domains: Sequence[str] = ()) -> list[str]:
    added = add_site(session, name, transport_block=block, remote_base=base,
                     admin_emails=list(admins), user_domains=list(domains))
    return [f"site {added.name}: {added.transport_block} {added.remote_base}"]


def status(session: Session, uid: str | None = None) -> list[str]:
    """One line per experiment and site ("no transfers" when there are none); an unknown
    UID is refused as "no such experiment"."""
    return status_lines(session, uid)
