"""Abstract booklet benchmark: opsflow's renderer and flow against a bare odfpy script.

A generated Indico export (60 sessions, 2,000 contributions, 5 authors each, 1,200-character
abstracts) is rendered by `opsflow.booklet.render`; the peer is a bare odfpy script that writes
the same paragraphs, spans and table of contents with the same named styles, from a flat
list prepared beforehand (read back from opsflow's own output, so the content is identical
by construction, and checked equal afterwards). Then the whole flow run (reading the export
file, validation,
rendering, storing with an expiry, artifacts) on a temporary Prefect server.

    .venv/bin/python -m bench.booklet [--sessions 60 --contributions 2000 --repeat 3]

Targets (issue 7): rendering at most 1.5 x the bare script; the whole flow run under 10 s.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import time
import zipfile
from pathlib import Path
from xml.etree import ElementTree

from odf.opendocument import OpenDocumentText
from odf.text import (
    H,
    IndexBody,
    IndexEntryChapter,
    IndexEntryPageNumber,
    IndexEntryTabStop,
    IndexEntryText,
    IndexTitle,
    IndexTitleTemplate,
    P,
    Span,
    TableOfContent,
    TableOfContentEntryTemplate,
    TableOfContentSource,
)

from opsflow.booklet.indico import read_export
from opsflow.booklet.options import BookletOptions
from opsflow.booklet.render import add_booklet_styles, render_booklet
from opsflow.booklet.sample import generate_export

TEXT_NS = "urn:oasis:names:tc:opendocument:xmlns:text:1.0"
STYLE = f"{{{TEXT_NS}}}style-name"


def flat_content(odt: bytes) -> tuple[list[str], list[tuple]]:
    """The table of contents (title, then lines) and the body paragraphs of an ODT, as plain tuples:
    (tag, outline level, style, [(text, span style or None)])."""
    with zipfile.ZipFile(io.BytesIO(odt)) as archive:
        root = ElementTree.fromstring(archive.read("content.xml"))
    body = root.find(".//{urn:oasis:names:tc:opendocument:xmlns:office:1.0}text")
    toc_lines: list[str] = []
    paragraphs: list[tuple] = []
    for element in body:
        if element.tag == f"{{{TEXT_NS}}}table-of-content":
            index = element.find(f"{{{TEXT_NS}}}index-body")
            title = "".join(index.find(f"{{{TEXT_NS}}}index-title").itertext())
            toc_lines = [title] + ["".join(p.itertext()) for p in index.findall(f"{{{TEXT_NS}}}p")]
            continue
        runs: list[tuple[str, str | None]] = []
        if element.text:
            runs.append((element.text, None))
        for child in element:
            runs.append(("".join(child.itertext()), child.get(STYLE)))
            if child.tail:
                runs.append((child.tail, None))
        tag = "h" if element.tag == f"{{{TEXT_NS}}}h" else "p"
        level = element.get(f"{{{TEXT_NS}}}outline-level")
        paragraphs.append((tag, level, element.get(STYLE), runs))
    return toc_lines, paragraphs


def bare_odfpy(toc_lines: list[str], paragraphs: list[tuple]) -> bytes:
    """The peer: plain odfpy calls writing the given content with the same styles."""
    doc = OpenDocumentText()
    styles = {style.getAttribute("name"): style for style in add_booklet_styles(doc).values()}
    contents_heading, contents_1 = styles["Contents_20_Heading"], styles["Contents_20_1"]
    toc = TableOfContent(name="Contents", protected="false")
    source = TableOfContentSource(outlinelevel=1)
    template = IndexTitleTemplate(stylename=contents_heading)
    template.addText(toc_lines[0])
    source.addElement(template)
    entry = TableOfContentEntryTemplate(outlinelevel=1, stylename=contents_1)
    for part in (IndexEntryChapter(), IndexEntryText(),
                 IndexEntryTabStop(type="right", leaderchar="."), IndexEntryPageNumber()):
        entry.addElement(part)
    source.addElement(entry)
    toc.addElement(source)
    index = IndexBody()
    title = IndexTitle(name="Contents_Head")
    title.addElement(P(stylename=contents_heading, text=toc_lines[0]))
    index.addElement(title)
    for line in toc_lines[1:]:
        index.addElement(P(stylename=contents_1, text=line))
    toc.addElement(index)
    text = doc.text
    first = True
    for tag, level, style, runs in paragraphs:
        if first and tag == "h":  # the table of contents goes after the title page
            text.addElement(toc)
            first = False
        element = H(outlinelevel=level, stylename=styles[style]) if tag == "h" else P(
            stylename=styles[style])
        for run, span in runs:
            if span is None:
                element.addText(run)
            else:
                element.addElement(Span(stylename=styles[span], text=run))
        text.addElement(element)
    out = io.BytesIO()
    doc.write(out)
    return out.getvalue()


def interleaved(ours, peer, repeat: int) -> tuple[list[float], list[float], object, object]:
    """Run both `repeat` times, alternating, so that a change in machine load hits both."""
    times_ours, times_peer, out_ours, out_peer = [], [], None, None
    for _ in range(repeat):
        start = time.perf_counter()
        out_ours = ours()
        times_ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        out_peer = peer()
        times_peer.append(time.perf_counter() - start)
    return times_ours, times_peer, out_ours, out_peer


def bench_rendering(export: dict, repeat: int) -> None:
    start = time.perf_counter()
    event = read_export(export)
    validate = time.perf_counter() - start
    options = BookletOptions()
    toc_lines, paragraphs = flat_content(render_booklet(event, options))
    times_ours, times_peer, odt, bare = interleaved(
        lambda: render_booklet(event, options), lambda: bare_odfpy(toc_lines, paragraphs), repeat)
    if flat_content(bare) != (toc_lines, paragraphs) or flat_content(odt) != (toc_lines,
                                                                              paragraphs):
        raise SystemExit("the bare script did not write the same content; comparison void")
    ours, peer = statistics.median(times_ours), statistics.median(times_peer)
    print(f"validation of the export (pydantic):      {validate:7.3f} s")
    print(f"rendering, opsflow.booklet (median of {repeat}):   {ours:7.3f} s  "
          f"(min {min(times_ours):.3f}; {len(odt):,} bytes)")
    print(f"rendering, bare odfpy script (median of {repeat}): {peer:7.3f} s  "
          f"(min {min(times_peer):.3f}; {len(bare):,} bytes)")
    print(f"ratio opsflow / bare odfpy: median {ours / peer:.2f}, min/min "
          f"{min(times_ours) / min(times_peer):.2f}  (target <= 1.5)")


def bench_flow(export: dict) -> None:
    import os

    from prefect.testing.utilities import prefect_test_harness

    with tempfile.TemporaryDirectory() as data, prefect_test_harness(server_startup_timeout=120):
        os.environ["OPSFLOW_DATA_DIR"] = data
        from opsflow.settings import get_settings

        get_settings.cache_clear()
        from flows.booklet import build_abstract_booklet

        small = generate_export(sessions=1, contributions=2, authors=1, abstract_chars=50)
        start = time.perf_counter()
        build_abstract_booklet(small)
        warm_up = time.perf_counter() - start
        # Flow run parameters are limited to 512 KiB: an export this size goes by path (or URL).
        path = Path(data) / "event.json"
        path.write_text(json.dumps(export))
        start = time.perf_counter()
        result = build_abstract_booklet(str(path))
        whole = time.perf_counter() - start
        size = Path(result["path"]).stat().st_size if result.get("path") else 0
        print(f"first flow run (server warm-up, tiny event): {warm_up:7.3f} s")
        print(f"export file: {path.stat().st_size:,} bytes")
        print(f"whole flow run, file in, ODT stored:         {whole:7.3f} s  ({size:,} bytes) "
              "(target < 10 s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=60)
    parser.add_argument("--contributions", type=int, default=2000)
    parser.add_argument("--authors", type=int, default=5)
    parser.add_argument("--abstract-chars", type=int, default=1200)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-flow", action="store_true", help="rendering only")
    args = parser.parse_args()
    export = generate_export(args.sessions, args.contributions, args.authors, args.abstract_chars)
    print(f"export: {args.sessions} sessions, {args.contributions} contributions, "
          f"{args.authors} authors each, {args.abstract_chars}-character abstracts")
    bench_rendering(export, args.repeat)
    if not args.no_flow:
        bench_flow(export)


if __name__ == "__main__":
    main()
