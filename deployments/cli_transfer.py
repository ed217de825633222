"""`opsflow transfer ...`: broadcast an experiment, restart a failed one, and the catalogue and
site records they need (the functions are in opsflow/transfer/commands.py).

    opsflow transfer EPN                        register EPN at every registered site
    opsflow transfer restart UID [--site S]     a failed experiment back to Ingested
    opsflow transfer catalogue EPN FOLDER --owner MAIL [--title T]
    opsflow transfer site NAME --block TYPE/NAME [--base PATH] [--admin MAIL] [--domain D]
    opsflow transfer status [UID]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from deployments.cli_support import CommandError, check_store


class EpnOrCommand(TyperGroup):
    """`opsflow transfer EPN` is `opsflow transfer broadcast EPN`: a first word that is not a
    command is the EPN to broadcast, as the legacy tool took it."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["broadcast", *args]
        return super().resolve_command(ctx, args)


transfer_app = typer.Typer(
    cls=EpnOrCommand,
    help="Experiment transfer to consumer sites: `opsflow transfer EPN` registers EPN at every "
    "site; restart, catalogue, site and status below.",
    no_args_is_help=True,
)


def _run(command: Callable[..., list[str]], **arguments: Any) -> None:
    """Run one library command in a session of the (checked) record store; print its lines."""
    from opsflow.store import session_scope
    from opsflow.transfer.commands import REFUSALS

    url = check_store()  # outside the try: a bad setting is a ValueError too, but exits 2
    try:
        with session_scope(url) as session:
            lines = command(session, **arguments)
    except REFUSALS as exc:
        raise CommandError(str(exc)) from None
    print("\n".join(lines))


@transfer_app.command("broadcast")
def broadcast(epn: Annotated[str, typer.Argument(metavar="EPN")]) -> None:
    """Register EPN at every registered site (also: `opsflow transfer EPN`)."""
    from opsflow.transfer import commands

    _run(commands.broadcast, epn=epn)


@transfer_app.command("restart")
def restart(uid: Annotated[str, typer.Argument(metavar="UID")],
            site: Annotated[str | None, typer.Option(help="only at this site")] = None) -> None:
    """Put a failed experiment back to Ingested."""
    from opsflow.transfer import commands

    _run(commands.restart, uid=uid, site=site)


@transfer_app.command("catalogue")
def catalogue(
    epn: Annotated[str, typer.Argument(metavar="EPN")],
    folder: Annotated[str, typer.Argument(metavar="FOLDER")],
    owner: Annotated[list[str], typer.Option(help="owner's e-mail (repeatable)")],
    title: Annotated[str, typer.Option()] = "",
) -> None:
    """Catalogue experiment EPN from FOLDER at the provider."""
    from opsflow.transfer import commands

    _run(commands.catalogue, epn=epn, folder=folder, owners=owner, title=title)


@transfer_app.command("site")
def site(
    name: Annotated[str, typer.Argument(metavar="NAME")],
    block: Annotated[str, typer.Option(help="target block, `type-slug/name`")],
    base: Annotated[str, typer.Option(help="folder on the site's storage")] = "",
    admin: Annotated[list[str] | None, typer.Option(help="admin e-mail (repeatable)")] = None,
    domain: Annotated[list[str] | None, typer.Option(
        help="e-mail domain of the site's users (repeatable)")] = None,
) -> None:
    """Register (or update) a consumer site."""
    from opsflow.transfer import commands

    _run(commands.site, name=name, block=block, base=base, admins=admin or [],
         domains=domain or [])


@transfer_app.command("status")
def status(uid: Annotated[str | None, typer.Argument(metavar="UID")] = None) -> None:
    """Each experiment's state at each site ("no transfers" when there are none)."""
    from opsflow.transfer import commands

    _run(commands.status, uid=uid)
