"""The `opsflow` command: admin commands of opsflow itself.

Conventions of Python CLIs: `--help` on every command, errors on stderr as one line,
exit 0 on success, 1 when the work failed, 2 for bad usage or bad settings.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from opsflow.settings import SettingsError, get_settings

Handler = Callable[[argparse.Namespace], int]


class CommandError(RuntimeError):
    """A command could not do its work; the message is shown as one line on stderr."""


def _db_upgrade(args: argparse.Namespace) -> int:
    from opsflow.store import current_revisions, upgrade

    url = get_settings().database_url
    upgrade(url)
    print(f"record store at revision {', '.join(sorted(current_revisions(url)))}")
    return 0


def _up(args: argparse.Namespace) -> int:
    from deployments.up import run_up

    return run_up(open_browser=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="opsflow",
        description="opsflow: background jobs as Prefect flows. Settings come from OPSFLOW_* "
        "environment variables.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    db = commands.add_parser("db", help="record store administration")
    db_commands = db.add_subparsers(dest="db_command", metavar="DB_COMMAND", required=True)
    upgrade = db_commands.add_parser("upgrade", help="apply the record store migrations")
    upgrade.set_defaults(handler=_db_upgrade)

    up = commands.add_parser(
        "up",
        help="run everything on this machine: Prefect server, deployments, sensors",
        description="Start a local Prefect server (unless PREFECT_API_URL names one), register "
        "the block types, serve every deployment with its schedule and triggers, and start "
        "the folder sensors. Ctrl-C stops it all.",
    )
    up.set_defaults(handler=_up)
    for register in EXTRA_COMMANDS:
        register(commands)
    return parser


# Later command groups (jobs, transfer, ...) add themselves here.
EXTRA_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []
EXTRA_COMMANDS.append(__import__("deployments.cli_jobs", fromlist=["register"]).register)
EXTRA_COMMANDS.append(__import__("deployments.cli_deployments", fromlist=["register"]).register)
EXTRA_COMMANDS.append(__import__("opsflow.delivery.admin", fromlist=["register"]).register)
EXTRA_COMMANDS.append(__import__("opsflow.sync.admin", fromlist=["register"]).register)
EXTRA_COMMANDS.append(
    __import__("opsflow.transfer.commands", fromlist=["x"]).add_transfer_commands)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        get_settings()
        return args.handler(args)
    except (SettingsError, CommandError) as exc:
        print(f"opsflow: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, SettingsError) else 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
