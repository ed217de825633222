"""`opsflow transfer ...`: broadcast an experiment, restart a failed one, and the catalogue and
site records they need. Plain argparse; `deployments/cli.py` registers `add_transfer_commands`.

    opsflow transfer EPN                        register EPN at every registered site
    opsflow transfer restart UID [--site S]     a failed experiment back to Ingested
    opsflow transfer catalogue EPN FOLDER --owner MAIL [--title T]
    opsflow transfer site NAME --block TYPE/NAME [--base PATH] [--admin MAIL] [--domain D]
    opsflow transfer status [UID]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from opsflow.settings import get_settings
from opsflow.store import session_scope
from opsflow.transfer.client import PermanentTransferError
from opsflow.transfer.consumer import RestartRefused
from opsflow.transfer.provider import catalogue_experiment, register_experiment
from opsflow.transfer.sites import RecordSiteManager, add_site
from opsflow.transfer.status import restart_lines, status_lines

USAGE = __doc__.split("\n\n")[1]
WORDS = ("restart", "catalogue", "site", "status")


def add_transfer_commands(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "transfer", help="experiment transfer: broadcast, restart, catalogue, sites, status",
        description="Experiment transfer to consumer sites.\n\n" + USAGE,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("words", nargs=argparse.REMAINDER, metavar="EPN | restart UID | ...")
    parser.set_defaults(handler=run_transfer_command)


def _parser(word: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"opsflow transfer {word}")
    if word == "restart":
        parser.add_argument("uid")
        parser.add_argument("--site", help="only at this site")
    elif word == "catalogue":
        parser.add_argument("epn")
        parser.add_argument("folder")
        parser.add_argument("--owner", action="append", required=True, help="owner's e-mail")
        parser.add_argument("--title", default="")
    elif word == "site":
        parser.add_argument("name")
        parser.add_argument("--block", required=True, help="target block, `type-slug/name`")
        parser.add_argument("--base", default="", help="folder on the site's storage")
        parser.add_argument("--admin", action="append", default=[], help="admin e-mail")
        parser.add_argument("--domain", action="append", default=[],
                            help="e-mail domain of the site's users")
    elif word == "status":
        parser.add_argument("uid", nargs="?")
    else:
        parser.add_argument("epn")
    return parser


def run_transfer_command(args: argparse.Namespace) -> int:
    words: Sequence[str] = args.words
    if not words:
        print(f"opsflow transfer: give an EPN or a command\n{USAGE}", file=sys.stderr)
        return 2
    word = words[0] if words[0] in WORDS else "broadcast"
    rest = words[1:] if word != "broadcast" else words
    try:
        options = _parser(word).parse_args(rest)
    except SystemExit as exc:
        return int(exc.code or 0)
    url = get_settings().database_url
    try:
        with session_scope(url) as session:
            return COMMANDS[word](session, options)
    except (RestartRefused, PermanentTransferError, ValueError) as exc:
        print(f"opsflow: {exc}", file=sys.stderr)
        return 1


def _broadcast(session, options) -> int:  # type: ignore[no-untyped-def]
    synced = register_experiment(session, options.epn, RecordSiteManager(session),
                                 broadcast=True)
    if not synced:
        print(f"opsflow: no site is registered; EPN {options.epn} went nowhere",
              file=sys.stderr)
        return 1
    for row in synced:
        print(f"{row.uid} at {row.site}: {row.state}, destination {row.destination}")
    return 0


def _restart(session, options) -> int:  # type: ignore[no-untyped-def]
    print("\n".join(restart_lines(session, options.uid, site=options.site)))
    return 0


def _catalogue(session, options) -> int:  # type: ignore[no-untyped-def]
    experiment = catalogue_experiment(session, options.epn, options.folder,
                                      title=options.title, owners=options.owner)
    print(f"EPN {experiment.epn} catalogued as {experiment.uid} from {experiment.source_root}")
    return 0


def _site(session, options) -> int:  # type: ignore[no-untyped-def]
    site = add_site(session, options.name, transport_block=options.block,
                    remote_base=options.base, admin_emails=options.admin,
                    user_domains=options.domain)
    print(f"site {site.name}: {site.transport_block} {site.remote_base}")
    return 0


def _status(session, options) -> int:  # type: ignore[no-untyped-def]
    print("\n".join(status_lines(session, options.uid)))
    return 0


COMMANDS = {"broadcast": _broadcast, "restart": _restart, "catalogue": _catalogue,
            "site": _site, "status": _status}
