"""Abstract booklet flows: Indico event JSON in, ODT (and PDF) out, kept with an expiry.

The legacy compute service (seed 004) becomes a Prefect deployment: its task states are the
flow run's states, its API key is the Prefect server's authentication, and Indico's button is
a `run_deployment` call. The caller passes the export itself (small events), or its URL:
Indico's export URL with the name of a Secret block holding an Indico API token, or any
server the worker can reach. A URL has no size limit; the server refuses flow-run parameters
above 512 KiB (about 180 contributions).

    build_abstract_booklet:  read and validate the export -> render the ODT -> (PDF) -> store
                             under an unguessable name with an expiry -> link artifacts; the
                             return value (persisted: `run.state.result()`) says where
    sweep_booklet_results:   delete the results whose expiry has passed (run it hourly)
"""

# No `from __future__ import annotations` here: Prefect builds the parameter model from the
# flow's annotations, and a served run (loaded from its entrypoint) cannot resolve them as text.
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_link_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.blocks.system import Secret
from prefect.cache_policies import NO_CACHE

from blocks.booklet import BookletConfig, BookletResults
from flows.jobs import job_slot
from flows.reporting import report_table, row
from opsflow.booklet.indico import Event, read_export
from opsflow.booklet.options import BookletOptions, expiry
from opsflow.booklet.pdf import libreoffice, odt_to_pdf
from opsflow.booklet.render import render_booklet
from opsflow.booklet.results import safe_filename

LINK_KEY = "abstract-booklet"  # the link artifact a caller reads to find the file
PDF_LINK_KEY = "abstract-booklet-pdf"
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
def read_event(event: dict[str, Any] | str, indico_token: str | None = None) -> Event:
    """Fetch (a URL) and validate the export before anything is written; bad input fails here,
    with one message naming the field path. The token comes from its Secret block here, in
    the task, so that it is never a parameter, a log line or a result."""
    token = Secret.load(indico_token).get() if indico_token else None
    return read_export(event, token=token)


@task(cache_policy=NO_CACHE)
def render(event: Event, options: BookletOptions, progress_id: UUID) -> bytes:
    """The ODT; progress goes to the run's progress artifact every 5% of contributions."""

    def report(done: int, total: int) -> None:
        update_progress_artifact(progress_id, 10 + 70 * done / max(total, 1),
                                 description=f"rendered {done} of {total} contributions")

    return render_booklet(event, options, report)


@task(cache_policy=NO_CACHE)
def make_pdf(odt: bytes) -> bytes | None:
    """The PDF LibreOffice makes of the ODT; None (and a warning) where it is not installed."""
    if libreoffice() is None:
        get_run_logger().warning("LibreOffice (soffice) is not installed on this worker: "
                                 "the booklet is stored as ODT only")
        return None
    return odt_to_pdf(odt)


@task(cache_policy=NO_CACHE)
def store(files: dict[str, bytes], results: BookletResults, expires_in: timedelta
          ) -> dict[str, dict[str, Any]]:
    """Put each file in the results area under a new unguessable name, all with one expiry."""
    area, now = results.area(), datetime.now(UTC)
    return {name: area.put(name, data, expires_in, now=now).as_dict()
            for name, data in files.items()}


@flow(name="build-abstract-booklet", persist_result=True)
def build_abstract_booklet(
    event: dict[str, Any] | str,
    config: BookletConfig | str | None = None,
    results: BookletResults | str | None = None,
    expiry_hours: float | None = None,
    indico_token: str | None = None,
) -> dict[str, Any]:
    """The abstract booklet of one Indico event.

    event: the export's URL (Indico's `https://.../export/event/ID.json?detail=sessions`, or a
        file:// URL or path the worker can read), or the export itself as a dict or JSON text
        (small events only: the server refuses parameters above 512 KiB).
    config: a saved `BookletConfig` block's name (or the block itself); default settings when
        omitted. Its `pdf` option adds a PDF beside the ODT.
    results: a saved `BookletResults` block's name; default: <data_dir>/booklets, 24 h.
    expiry_hours: keep the result this long (more than 0) instead of the results block's expiry.
    indico_token: the name of a Secret block holding an Indico API token, sent with the URL.

    Returns {name, location, size, expires_at, path, pdf}, `pdf` the same for the PDF or None;
    the run's link artifacts `abstract-booklet` (and `abstract-booklet-pdf`) give the same
    locations.
    """
    with job_slot():
        logger = get_run_logger()
        options = booklet_options(config)
        area = results_block(results)
        expires_in = expiry(expiry_hours, area.expiry)
        progress = create_progress_artifact(0.0, key=PROGRESS_KEY,
                                            description="reading the export")
        booklet_event = read_event(event, indico_token)
        update_progress_artifact(progress, 10.0, description=f"rendering {booklet_event.title!r}")
        odt = render(booklet_event, options, progress)
        filename = safe_filename(f"{booklet_event.title} abstract booklet", ".odt")
        files = {filename: odt}
        if options.pdf:
            update_progress_artifact(progress, 80.0, description="LibreOffice makes the PDF")
            pdf = make_pdf(odt)
            if pdf is not None:
                files[filename.removesuffix(".odt") + ".pdf"] = pdf
        update_progress_artifact(progress, 95.0, description="storing the booklet")
        stored = store(files, area, expires_in)
        booklet, pdf_stored = stored[filename], next(
            (v for k, v in stored.items() if k != filename), None)
        for key, item in ((LINK_KEY, booklet), (PDF_LINK_KEY, pdf_stored)):
            if item is not None:
                name = item["name"].rsplit("/", 1)[-1]
                create_link_artifact(key=key, link=item["location"], link_text=name,
                                     description=f"Abstract booklet of {booklet_event.title}, "
                                     f"{item['size']:,} bytes, kept until {item['expires_at']}.")
        update_progress_artifact(progress, 100.0, description="done")
        logger.info("abstract booklet of %r stored as %s%s, until %s", booklet_event.title,
                    booklet["name"], " with its PDF" if pdf_stored else "",
                    booklet["expires_at"])
        return {**booklet, "pdf": pdf_stored}


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
