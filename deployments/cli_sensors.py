"""`opsflow sensors run` and `opsflow sensors work`: the folder sensors, or the work sensor, in
the foreground until Ctrl-C or SIGTERM.

The sensor itself (sensors/folder.py) knows nothing of the command line; this module checks
the store and the Prefect server as every `opsflow` command does, then starts it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from deployments.cli_support import check_store, prefect_server
from sensors.folder import emit_prefect_event, run_sensors
from sensors.work import run_work_sensor

sensors_app = typer.Typer(
    help="The sensors: folder sensors queue each SyncMapping's changes; the work sensor "
         "wakes deployments when records make work due.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@sensors_app.command("run")
def run(
    mapping: Annotated[list[str] | None, typer.Option(
        help="a SyncMapping block (repeatable); default: every saved one")] = None,
    local_folder: Annotated[Path | None, typer.Option(
        help="watch this folder without a block (with --name)")] = None,
    name: Annotated[str | None, typer.Option(help="mapping name for --local-folder")] = None,
    settle: Annotated[float, typer.Option(min=0, help="settle seconds")] = 2.0,
    exclude: Annotated[list[str] | None, typer.Option(help="a pattern not to sync")] = None,
    database_url: Annotated[str | None, typer.Option(
        help="record store (default: OPSFLOW settings)")] = None,
    no_events: Annotated[bool, typer.Option("--no-events",
                                            help="do not emit Prefect events")] = False,
) -> None:
    """Run the folder sensors in the foreground until Ctrl-C or SIGTERM."""
    from contextlib import nullcontext

    if local_folder and not name:
        raise typer.BadParameter("--local-folder needs --name", param_hint="--local-folder")
    url = check_store(database_url)  # never creates the store, and it must be migrated
    # Blocks and events need the Prefect server of `opsflow up`, never a temporary one.
    with nullcontext() if local_folder and no_events else prefect_server():
        run_sensors(mapping, local_folder, name or "", settle, exclude or [], url,
                    None if no_events else emit_prefect_event)


@sensors_app.command("work")
def work(database_url: Annotated[str | None, typer.Option(
        help="record store (default: OPSFLOW settings)")] = None) -> None:
    """Run the work sensor: it wakes each record-driven deployment when its work comes due
    (`opsflow up` runs it itself; on several machines, run it on one)."""
    url = check_store(database_url)
    with prefect_server():  # its events go to the server of `opsflow up`, or PREFECT_API_URL's
        run_work_sensor(url)
