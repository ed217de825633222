"""`opsflow sync status`: what each mapping's sync queue holds, and whether a drain is live.

    opsflow sync status [--mapping NAME] [--failed 20]

Failed actions are not retried by themselves (the target refused them: a permission, a
refused path); once the cause is fixed, a full run (`sync_folder(mapping, full=True)`, or the
`sync-all-folders` safety net) enqueues whatever still differs.
"""

from __future__ import annotations

from typing import Annotated

import typer

from deployments.cli_support import check_store

sync_app = typer.Typer(help="The folder sync queues: what each mapping's queue holds.",
                       no_args_is_help=True)


@sync_app.command("status")
def status(
    mapping: Annotated[str | None, typer.Option(help="only this mapping")] = None,
    failed: Annotated[int, typer.Option(
        min=0, metavar="N", help="show the last N failed actions per mapping")] = 20,
) -> None:
    """What each mapping's queue holds, and whether a drain is running."""
    from opsflow.store import sessions
    from opsflow.sync.admin import status_lines

    with sessions(check_store())() as session:
        print("\n".join(status_lines(session, mapping, failed)))
