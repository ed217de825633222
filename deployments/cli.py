"""The `opsflow` command: one Typer app with a sub-app per area.

    opsflow up | db | jobs | mail | sync | transfer | deployments | sensors   (--help on each)

Conventions of Python CLIs: `--help` on every command, errors on stderr as one line,
exit 0 on success, 1 when the work or its environment failed, 2 for bad usage or bad
settings. Every `OPSFLOW_*` setting is checked before any command runs, so a bad value stops
it before anything is created. The query functions live in the library (`opsflow/`); the
modules here only parse the command line and print.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import typer

# Typer carries its own copy of Click; its exceptions are what a usage error raises.
from typer._click import exceptions as click

from deployments.cli_deployments import deployments_app
from deployments.cli_jobs import jobs_app
from deployments.cli_mail import mail_app
from deployments.cli_sensors import sensors_app
from deployments.cli_support import CommandError, check_store, first_line
from deployments.cli_sync import sync_app
from deployments.cli_transfer import transfer_app
from opsflow.settings import SettingsError, get_settings

app = typer.Typer(
    name="opsflow",
    help="opsflow: background jobs as Prefect flows. Settings come from OPSFLOW_* environment "
    "variables.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def check_settings() -> None:
    """Read every setting before any command runs: a bad one stops it with one line, exit 2."""
    get_settings()


db_app = typer.Typer(help="The record store: apply its migrations.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the record store migrations (creates the SQLite store if there is none)."""
    from opsflow.store import current_revisions, upgrade

    url = check_store(create=True, migrated=False)
    upgrade(url)
    print(f"record store at revision {', '.join(sorted(current_revisions(url)))}")


@app.command("up")
def up() -> int:
    """Run everything on this machine: Prefect server, deployments, sensors.

    Start a local Prefect server (unless PREFECT_API_URL names one), register the block
    types, serve every deployment with its schedule and triggers, and start the folder
    sensors. Ctrl-C stops it all.
    """
    from deployments.up import run_up

    settings = get_settings()
    # A record store elsewhere (PostgreSQL, another file) must answer before the server is
    # started; the default SQLite store in the data folder is `opsflow up`'s own to create.
    if settings.database_url != f"sqlite:///{(settings.data_dir / 'opsflow.db').resolve()}":
        check_store(settings.database_url, create=True, migrated=False)
    return run_up(open_browser=False)


app.add_typer(db_app, name="db")
app.add_typer(jobs_app, name="jobs")
app.add_typer(mail_app, name="mail")
app.add_typer(sync_app, name="sync")
app.add_typer(transfer_app, name="transfer")
app.add_typer(deployments_app, name="deployments")
app.add_typer(sensors_app, name="sensors")


def build_command() -> typer.core.TyperGroup:
    """The Click command behind the app (for tests that walk every command)."""
    return typer.main.get_command(app)


def main(argv: Sequence[str] | None = None) -> int:
    """Run `opsflow` with `argv`; returns the exit code. Every error is one line on stderr."""
    try:
        result = build_command().main(args=list(sys.argv[1:] if argv is None else argv),
                                      prog_name="opsflow", standalone_mode=False)
    except click.NoArgsIsHelpError:
        return 2  # the help of the command was shown while the error was made
    except click.UsageError as exc:
        where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
        print(f"opsflow: {exc.format_message()}{where}", file=sys.stderr)
        return 2
    except SettingsError as exc:
        print(f"opsflow: {exc}", file=sys.stderr)
        return 2
    except CommandError as exc:
        print(f"opsflow: {exc}", file=sys.stderr)
        return exc.exit_code
    except click.ClickException as exc:
        print(f"opsflow: {exc.format_message()}", file=sys.stderr)
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        return 130
    except Exception as exc:  # noqa: BLE001 - an environment failure: one line, never a trace
        print(f"opsflow: {type(exc).__name__}: {first_line(exc)}", file=sys.stderr)
        return 1
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
