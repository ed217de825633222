"""`opsflow deployments ...`: the deployment list and the `prefect.yaml` made from it.

    opsflow deployments list            every deployment with its schedule
    opsflow deployments yaml            print prefect.yaml as generated from the list
    opsflow deployments yaml --write    regenerate the project's prefect.yaml
    opsflow deployments yaml --check    exit 1 if prefect.yaml is out of date
"""

from __future__ import annotations

import sys
from datetime import timedelta
from typing import Annotated

import typer

from deployments.cli_support import CommandError, UsageError

deployments_app = typer.Typer(
    help="The deployment list and prefect.yaml. Every deployment is defined once, in "
    "deployments/definitions.py; `opsflow up` serves it and prefect.yaml is generated from it.",
    no_args_is_help=True,
)

UNITS = (("d", 86400), ("h", 3600), ("min", 60), ("s", 1))


def human_interval(interval: timedelta) -> str:
    """`every 30 s`, `every 5 min`, `every 1 h 30 min`: how an operator says it."""
    seconds = int(interval.total_seconds())
    parts = []
    for unit, size in UNITS:
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {unit}")
    return "every " + (" ".join(parts) or "0 s")


def schedule_text(cron: str | None, interval: timedelta | None, triggers: int) -> str:
    when = f"cron {cron} (UTC)" if cron else human_interval(interval) if interval else "on demand"
    return when + (f" + {triggers} trigger(s)" if triggers else "")


def table(rows: list[tuple[str, ...]]) -> str:
    """Rows as left-aligned columns, two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
                     .rstrip() for row in rows)


@deployments_app.command("list")
def list_deployments() -> None:
    """Print every deployment with its entrypoint and schedule."""
    from deployments.definitions import DEPLOYMENTS

    rows = [("DEPLOYMENT", "ENTRYPOINT", "SCHEDULE")]
    rows += [(spec.name, spec.entrypoint,
              schedule_text(spec.cron, spec.interval, len(spec.triggers))) for spec in DEPLOYMENTS]
    print(table(rows))


@deployments_app.command("yaml")
def yaml(
    write: Annotated[bool, typer.Option("--write", help="write the project's prefect.yaml")]
    = False,
    check: Annotated[bool, typer.Option(
        "--check", help="exit 1 if the project's prefect.yaml differs from the list")] = False,
) -> None:
    """Print, write or check prefect.yaml (the same deployments on a process work pool)."""
    from deployments.definitions import PROJECT_DIR, render_prefect_yaml

    if write and check:
        raise UsageError("--write and --check do not go together")
    text = render_prefect_yaml()
    target = PROJECT_DIR / "prefect.yaml"
    if check:
        current = target.read_text() if target.exists() else ""
        if current != text:
            raise CommandError(f"{target} is out of date; run `opsflow deployments yaml --write`")
        print(f"{target} is up to date")
    elif write:
        target.write_text(text)
        print(f"wrote {target}")
    else:
        sys.stdout.write(text)
