"""Abstract booklet flows: Indico event JSON in, ODT out, result kept with an expiry.

The legacy compute service (seed 004) becomes a Prefect deployment: its task states are the
flow run's states, its API key is the Prefect server's authentication, and Indico's button is
a `run_deployment` call. The export carries everything; the flow fetches nothing from Indico.

    build_abstract_booklet:  read and validate the export -> render the ODT -> store it under
                             an unguessable name with an expiry -> link artifact, return value
    sweep_booklet_results:   delete the results whose expiry has passed (run it hourly)
"""

# No `from __future__ import annotations` here: Prefect builds the parameter model from the
# flow's annotations, and a served run (loaded from its entrypoint) cannot resolve them as text.
from datetime import timedelta
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_link_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE

from blocks.booklet import BookletConfig, BookletResults
from flows.jobs import job_slot
from flows.reporting import report_table, row
from opsflow.booklet.indico import Event, read_export
from opsflow.booklet.options import BookletOptions
from opsflow.booklet.render import render_booklet
from opsflow.booklet.results import safe_filename

LINK_KEY = "abstract-booklet"  # the link artifact a caller reads to find the file
PROGRESS_KEY = "abstract-booklet-progress"


def booklet_options(config: BookletConfig | dict | str | None) -> BookletOptions:
    """The options from a saved block's name, a block, its fields as a dict, or defaults."""
    if config is None:
        return BookletOptions()
    if isinstance(config, str):
        config = BookletConfig.load(config)
    elif isinstance(config, dict):
        config = BookletConfig(**config)
    return config.options()


def results_block(results: BookletResults | dict | str | None) -> BookletResults:
    if results is None:
        return BookletResults()
    if isinstance(results, str):
        return BookletResults.load(results)
    if isinstance(results, dict):
        return BookletResults(**results)
    return results


@task(cache_policy=NO_CACHE)
def read_event(event: dict[str, Any] | str) -> Event:
    """Validate the export before anything is written; bad input fails here, with one
    message naming the field path."""
    return read_export(event)


@task(cache_policy=NO_CACHE)
def render(event: Event, options: BookletOptions, progress_id: UUID) -> bytes:
    """The ODT; progress goes to the run's progress artifact every 5% of contributions."""

    def report(done: int, total: int) -> None:
        update_progress_artifact(progress_id, 10 + 80 * done / max(total, 1),
                                 description=f"rendered {done} of {total} contributions")

    return render_booklet(event, options, report)


@task(cache_policy=NO_CACHE)
def store(odt: bytes, filename: str, results: BookletResults, expires_in: timedelta
          ) -> dict[str, Any]:
    """Put the booklet in the results area under a new unguessable name, with its expiry."""
    return results.area().put(filename, odt, expires_in).as_dict()


@flow(name="build-abstract-booklet")
def build_abstract_booklet(
    event: dict[str, Any] | str,
    config: BookletConfig | str | None = None,
    results: BookletResults | str | None = None,
    expiry_hours: float | None = None,
) -> dict[str, Any]:
    """The abstract booklet of one Indico event.

    event: the export (`/export/event/ID.json?detail=sessions`) as a dict or JSON text, or a
        path or URL of a file the worker can read.
    config: a saved `BookletConfig` block's name (or the block itself); default settings when
        omitted.
    results: a saved `BookletResults` block's name; default: <data_dir>/booklets, 24 h.
    expiry_hours: keep the result this long instead of the results block's expiry.

    Returns {name, location, size, expires_at, path}; the link artifact `abstract-booklet`
    of the run gives the same location.
    """
    with job_slot():
        logger = get_run_logger()
        options = booklet_options(config)
        area = results_block(results)
        expires_in = timedelta(hours=expiry_hours) if expiry_hours else area.expiry
        progress = create_progress_artifact(0.0, key=PROGRESS_KEY,
                                            description="validating the export")
        booklet_event = read_event(event)
        update_progress_artifact(progress, 10.0, description=f"rendering {booklet_event.title!r}")
        odt = render(booklet_event, options, progress)
        update_progress_artifact(progress, 90.0, description="storing the booklet")
        filename = safe_filename(f"{booklet_event.title} abstract booklet", ".odt")
        stored = store(odt, filename, area, expires_in)
        create_link_artifact(key=LINK_KEY, link=stored["location"], link_text=filename,
                             description=f"Abstract booklet of {booklet_event.title}, "
                             f"{stored['size']:,} bytes, kept until {stored['expires_at']}.")
        update_progress_artifact(progress, 100.0, description="done")
        logger.info("abstract booklet of %r stored as %s, until %s", booklet_event.title,
                    stored["name"], stored["expires_at"])
        return stored


@task(cache_policy=NO_CACHE)
def sweep(results: BookletResults) -> list[str]:
    return results.area().sweep()


@flow(name="sweep-booklet-results")
def sweep_booklet_results(results: BookletResults | str | None = None) -> int:
    """Delete the booklets whose expiry has passed; returns how many went."""
    with job_slot():
        removed = sweep(results_block(results))
        report_table("sweep-booklet-results", f"{len(removed)} expired booklet(s) removed",
                     [row("expired booklets removed", len(removed),
                          note=", ".join(removed[:10]))])
        get_run_logger().info("removed %d expired booklet(s)", len(removed))
        return len(removed)
