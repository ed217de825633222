"""`opsflow deployments ...`: the deployment list and the `prefect.yaml` made from it.

    opsflow deployments list            every deployment with its schedule
    opsflow deployments yaml            print prefect.yaml as generated from the list
    opsflow deployments yaml --write    regenerate the project's prefect.yaml
    opsflow deployments yaml --check    exit 1 if prefect.yaml is out of date
"""

from __future__ import annotations

import argparse
import sys


def _list(args: argparse.Namespace) -> int:
    from deployments.definitions import DEPLOYMENTS

    for spec in DEPLOYMENTS:
        when = spec.cron or (f"every {spec.interval}" if spec.interval else "on demand")
        triggers = f" + {len(spec.triggers)} trigger(s)" if spec.triggers else ""
        print(f"{spec.name}\t{spec.entrypoint}\t{when}{triggers}")
    return 0


def _yaml(args: argparse.Namespace) -> int:
    from deployments.definitions import PROJECT_DIR, render_prefect_yaml

    text = render_prefect_yaml()
    target = PROJECT_DIR / "prefect.yaml"
    if args.check:
        current = target.read_text() if target.exists() else ""
        if current != text:
            print(f"opsflow: {target} is out of date; run `opsflow deployments yaml --write`",
                  file=sys.stderr)
            return 1
        print(f"{target} is up to date")
        return 0
    if args.write:
        target.write_text(text)
        print(f"wrote {target}")
        return 0
    sys.stdout.write(text)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser(
        "deployments",
        help="the deployment list and prefect.yaml",
        description="Every deployment is defined once, in deployments/definitions.py; "
        "`opsflow up` serves it and prefect.yaml is generated from it.",
    )
    sub = group.add_subparsers(dest="deployments_command", metavar="DEPLOYMENTS_COMMAND",
                               required=True)
    listing = sub.add_parser("list", help="print every deployment with its schedule")
    listing.set_defaults(handler=_list)
    yaml = sub.add_parser(
        "yaml",
        help="print, write or check prefect.yaml (the same deployments on a process work pool)",
    )
    mode = yaml.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="write the project's prefect.yaml")
    mode.add_argument("--check", action="store_true",
                      help="exit 1 if the project's prefect.yaml differs from the list")
    yaml.set_defaults(handler=_yaml)
