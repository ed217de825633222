"""`opsflow mail ...`: what the outgoing mail queue holds, and sending failed mails again.

    opsflow mail status [--failed 20]
    opsflow mail retry KEY... | --all-failed

Retrying puts a failed mail back in the queue with its attempts reset, under the same key and
so the same Message-ID; its tip goes back to `not notified` until the server accepts it.
"""

from __future__ import annotations

from typing import Annotated

import typer

from deployments.cli_support import UsageError, check_store

mail_app = typer.Typer(help="The outgoing mail queue: what it holds, and failed mails again.",
                       no_args_is_help=True)


@mail_app.command("status")
def status(failed: Annotated[int, typer.Option(
        min=0, metavar="N", help="show the last N failed mails")] = 20) -> None:
    """Mails by status and the last failures."""
    from opsflow.delivery.admin import queue_status
    from opsflow.store import sessions

    with sessions(check_store())() as session:
        print(queue_status(session, failed))


@mail_app.command("retry")
def retry(
    keys: Annotated[list[str] | None, typer.Argument(metavar="KEY...",
                                                     help="keys of failed mails")] = None,
    all_failed: Annotated[bool, typer.Option("--all-failed", help="every failed mail")] = False,
) -> None:
    """Queue failed mails again, under the same key (and so the same Message-ID)."""
    from opsflow.delivery.admin import retry_failed
    from opsflow.store import sessions

    keys = keys or []
    if not keys and not all_failed:
        raise UsageError("name the mails to retry by key, or give --all-failed")
    with sessions(check_store())() as session:
        count = retry_failed(session, keys, all_failed=all_failed)
    if keys and count < len(set(keys)):
        print(f"queued {count} of {len(set(keys))} mails again (the others are not "
              f"failed mails)")
        raise typer.Exit(1)
    print(f"queued {count} mail(s) again")
